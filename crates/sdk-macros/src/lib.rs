//! Procedural macros of the helios-plugin guest SDK: `#[hook(Name)]` (HeliosProxy's hook convention)
//! and `#[chio_guard]` (chio's guard convention). Use them through `helios-plugin-abi`, which
//! re-exports them; the code they generate refers to `::helios_plugin_abi::__private` only.
//!
//! Both macros leave the plugin's function as it is (so it stays callable from native unit tests) and
//! add, for `wasm32` only, the `extern "C"` export that decodes the host's JSON, calls the function and
//! encodes its answer, plus a `helios.plugin` custom-section entry naming what the module serves.
//! The function's signature is checked against the hook's types (`helios_plugin_schema::hooks::spec`)
//! by rustc, at the function's name, on every target.
//!
//! **Invariant:** the macros know no hook and no export by heart: hook names come from
//! `helios_plugin_schema::Hook::ALL`, and every generated export's name and wasm signature from the
//! typed tables `abi::EXPORTS` and `abi::HOOK_SIG` when they expand (a change there changes the
//! generated `extern "C"` signature, and the SDK's glue then fails to compile rather than drift).
//! Misuse becomes a `compile_error!` at the offending tokens; the macros never panic.

use helios_plugin_schema::{Hook, abi};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{FnArg, ItemFn, ReturnType, Type};

/// Serves a hook of the catalogue: `#[hook(PreQuery)] fn check(ctx: &QueryContext) -> PreQueryResult`.
///
/// The argument is the hook's input (`<spec::X as HookSpec>::Input`), by value or by reference; the
/// return type is its output. On `wasm32` this adds the export named after the hook (`pre_query`).
#[proc_macro_attribute]
pub fn hook(attr: proc_macro::TokenStream, item: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let item = TokenStream::from(item);
    match expand_hook(attr.into(), item.clone()) {
        Ok(ts) => ts.into(),
        Err(e) => with_item(e, item),
    }
}

/// Makes a chio guard: `#[chio_guard] fn evaluate(req: GuardRequest) -> GuardVerdict` (or
/// `&GuardRequest`). On `wasm32` this adds the `evaluate` and `chio_deny_reason` exports.
#[proc_macro_attribute]
pub fn chio_guard(attr: proc_macro::TokenStream, item: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let item = TokenStream::from(item);
    match expand_guard(attr.into(), item.clone()) {
        Ok(ts) => ts.into(),
        Err(e) => with_item(e, item),
    }
}

/// The error, plus the item unchanged so that its other uses do not add unrelated errors.
fn with_item(e: syn::Error, item: TokenStream) -> proc_macro::TokenStream {
    let err = e.to_compile_error();
    quote!(#err #item).into()
}

fn known_hooks() -> String {
    Hook::ALL.iter().map(|h| h.variant_name()).collect::<Vec<_>>().join(", ")
}

fn parse_hook_name(attr: TokenStream) -> syn::Result<(Hook, syn::Ident)> {
    if attr.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            format!("#[hook] needs the hook it serves, e.g. #[hook(PreQuery)] (known: {})", known_hooks()),
        ));
    }
    let ident: syn::Ident = syn::parse2(attr).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("#[hook] takes one hook name, e.g. #[hook(PreQuery)] (known: {})", known_hooks()),
        )
    })?;
    let name = ident.to_string();
    if let Some(h) = Hook::from_variant_name(&name) {
        return Ok((h, ident));
    }
    let hint = Hook::ALL
        .iter()
        .find(|h| h.export_name() == name || h.variant_name().eq_ignore_ascii_case(&name))
        .map(|h| format!("; did you mean `{}`?", h.variant_name()))
        .unwrap_or_default();
    Err(syn::Error::new(ident.span(), format!("unknown hook `{name}` (known: {}){hint}", known_hooks())))
}

/// How the function takes its input.
enum Arg {
    ByValue,
    ByRef,
}

/// Checks what a hook or guard function may look like and returns how it takes its argument.
fn check_signature(f: &ItemFn, what: &str, input: &str) -> syn::Result<Arg> {
    let sig = &f.sig;
    if let Some(t) = &sig.asyncness {
        return Err(syn::Error::new(t.span, format!("{what} cannot be `async fn`: the host calls it synchronously")));
    }
    if let Some(t) = &sig.unsafety {
        return Err(syn::Error::new(t.span, format!("{what} cannot be `unsafe fn`")));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new_spanned(
            abi,
            format!(
                "{what} must be a plain Rust `fn`: the macro writes the `extern \"C\"` export itself, remove this ABI"
            ),
        ));
    }
    if let Some(p) = sig.generics.params.iter().find(|p| !matches!(p, syn::GenericParam::Lifetime(_))) {
        return Err(syn::Error::new_spanned(
            p,
            format!("{what} cannot be generic: the host calls one concrete function"),
        ));
    }
    if let Some(w) = &sig.generics.where_clause {
        return Err(syn::Error::new_spanned(w, format!("{what} cannot have a `where` clause")));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new_spanned(v, format!("{what} cannot be variadic")));
    }
    if let Some(r) = sig.receiver() {
        return Err(syn::Error::new_spanned(r, format!("{what} is a free function: `self` is not allowed")));
    }
    let mut args = sig.inputs.iter();
    let Some(first) = args.next() else {
        return Err(syn::Error::new(
            sig.paren_token.span.join(),
            format!("{what} takes exactly one argument ({input}, by value or by reference), found none"),
        ));
    };
    if let Some(extra) = args.next() {
        return Err(syn::Error::new_spanned(
            extra,
            format!(
                "{what} takes exactly one argument ({input}, by value or by reference), found {}",
                sig.inputs.len()
            ),
        ));
    }
    let FnArg::Typed(pt) = first else {
        return Err(syn::Error::new_spanned(first, format!("{what} is a free function: `self` is not allowed")));
    };
    Ok(match &*pt.ty {
        Type::Reference(r) if r.mutability.is_none() => Arg::ByRef,
        Type::Reference(r) => {
            return Err(syn::Error::new_spanned(
                r,
                format!("{what} takes its input by value or by shared reference, not by `&mut`"),
            ));
        }
        _ => Arg::ByValue,
    })
}

/// Whether the function's argument is written `HookContext` (`&HookContext`, `abi::HookContext`).
fn takes_hook_context(f: &ItemFn) -> bool {
    let Some(FnArg::Typed(pt)) = f.sig.inputs.first() else { return false };
    let ty = match &*pt.ty {
        Type::Reference(r) => &*r.elem,
        t => t,
    };
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "HookContext" && s.arguments.is_none()))
}

fn arg_kind(f: &ItemFn) -> Arg {
    match f.sig.inputs.first() {
        Some(FnArg::Typed(pt)) if matches!(&*pt.ty, Type::Reference(_)) => Arg::ByRef,
        _ => Arg::ByValue,
    }
}

/// The `extern "C"` parameters (named `names`) and return type of an ABI signature: `ptr: i32,
/// len: i32` and `-> i64` for [`abi::HOOK_SIG`]. An arity that does not match the SDK's glue is an
/// error of the macro (the glue and the table must change together).
fn extern_sig(export: &str, sig: &abi::Sig, names: &[&str]) -> syn::Result<(TokenStream, TokenStream)> {
    if sig.params.len() != names.len() || sig.results.len() > 1 {
        return Err(syn::Error::new(
            Span::call_site(),
            format!(
                "helios-plugin SDK: export `{export}` is {sig} in helios_plugin_schema::abi, which this SDK's glue does not speak"
            ),
        ));
    }
    let ty = |t: &abi::ValType| format_ident!("{}", t.name());
    let params = names.iter().zip(sig.params).map(|(n, t)| {
        let (n, t) = (format_ident!("{}", n), ty(t));
        quote!(#n: #t)
    });
    let ret = match sig.results.first() {
        Some(t) => {
            let t = ty(t);
            quote!(-> #t)
        }
        None => quote!(),
    };
    Ok((quote!(#(#params),*), ret))
}

/// A fixed-name export of `abi::EXPORTS` (its name and signature), or an error of the macro.
fn fixed_export(name: &str) -> syn::Result<&'static abi::ExportSig> {
    abi::export(name).ok_or_else(|| {
        syn::Error::new(
            Span::call_site(),
            format!("helios-plugin SDK: `{name}` is not in helios_plugin_schema::abi::EXPORTS"),
        )
    })
}

/// The `helios.plugin` section entry `sdk=...\nname=...\nversion=...\n<key>=<value>\n`, for wasm32
/// only. `name` and `version` are the plugin crate's own (`env!` expands in the plugin's crate).
fn section_static(key: &TokenStream, value: &str) -> TokenStream {
    let section = helios_plugin_schema::section::SECTION_NAME;
    let args = quote!(#key, #value, ::core::env!("CARGO_PKG_NAME"), ::core::env!("CARGO_PKG_VERSION"));
    quote! {
        #[unsafe(link_section = #section)]
        #[used]
        static __HELIOS_PLUGIN_SECTION: [u8; ::helios_plugin_abi::__private::section_entry_len(#args)] =
            ::helios_plugin_abi::__private::section_entry(#args);
    }
}

fn expand_hook(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let (hook, hook_ident) = parse_hook_name(attr)?;
    let f: ItemFn = syn::parse2(item)
        .map_err(|e| syn::Error::new(e.span(), "#[hook] applies to a function: `fn name(input) -> output`"))?;
    let what = format!("a {} hook", hook.variant_name());
    let input = format!("the hook's input, `<spec::{} as HookSpec>::Input`", hook.variant_name());
    let arg = check_signature(&f, &what, &input)?;

    let name = &f.sig.ident;
    let export = hook.export_name();
    let export_fn = format_ident!("__helios_hook_{}", export);
    // The spec marker shares the variant's name (`hooks::spec::PreQuery`); keep the user's span on it
    // so that type errors point at the attribute.
    let spec_ident = syn::Ident::new(hook.variant_name(), hook_ident.span());
    let spec = quote!(::helios_plugin_abi::__private::spec::#spec_ident);
    let input_ty = quote!(<#spec as ::helios_plugin_abi::__private::HookSpec>::Input);
    let output_ty = quote!(<#spec as ::helios_plugin_abi::__private::HookSpec>::Output);

    // rustc checks the function against the spec at its name: "expected fn pointer `fn(&QueryContext)
    // -> PreQueryResult`, found fn item ...". Without a return type the function returns `()`: check
    // the input alone, and that `()` is the hook's output with a message saying what to declare.
    let (checked_output, unit_check) = match &f.sig.output {
        ReturnType::Type(..) => (output_ty.clone(), quote!()),
        ReturnType::Default => {
            let at = f.sig.paren_token.span.close();
            let spec_at = syn::Ident::new(hook.variant_name(), at);
            let spec = quote_spanned!(at=> ::helios_plugin_abi::__private::spec::#spec_at);
            let output_ty = quote_spanned!(at=> <#spec as ::helios_plugin_abi::__private::HookSpec>::Output);
            (
                quote!(()),
                quote_spanned!(at=> const _: () = ::helios_plugin_abi::__private::declared_output::<#spec, #output_ty>();),
            )
        }
    };
    let (check, call) = match arg {
        // The HeliosProxy page's form: a statement hook taking the session's `HookContext`, whose
        // `sql` the SDK fills (`__private::HookArg`); for a hook whose input *is* a `HookContext`
        // (on_connect) this is the input itself.
        _ if takes_hook_context(&f) => {
            let ctx = quote!(::helios_plugin_abi::__private::HookContext);
            let from = quote!(<#ctx as ::helios_plugin_abi::__private::HookArg<#spec>>::from_input);
            let arg = quote!(#from(input));
            // On every target: this hook can give its function a `HookContext`.
            let convertible = quote_spanned!(name.span()=> const _: fn(#input_ty) -> #ctx = #from;);
            match arg_kind(&f) {
                Arg::ByRef => (
                    quote_spanned!(name.span()=> const _: for<'__a> fn(&'__a #ctx) -> #checked_output = #name; #convertible),
                    quote!(|input: #input_ty| #name(&#arg)),
                ),
                Arg::ByValue => (
                    quote_spanned!(name.span()=> const _: fn(#ctx) -> #checked_output = #name; #convertible),
                    quote!(|input: #input_ty| #name(#arg)),
                ),
            }
        }
        Arg::ByRef => (
            quote_spanned!(name.span()=> const _: for<'__a> fn(&'__a #input_ty) -> #checked_output = #name;),
            quote!(|input: #input_ty| #name(&input)),
        ),
        Arg::ByValue => {
            (quote_spanned!(name.span()=> const _: fn(#input_ty) -> #checked_output = #name;), quote!(#name))
        }
    };
    let section = section_static(&quote!(::helios_plugin_abi::__private::SECTION_KEY_HOOK), export);
    let (params, ret) = extern_sig(export, &abi::HOOK_SIG, &["ptr", "len"])?;
    Ok(quote! {
        #f

        #check
        #unit_check

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(export_name = #export)]
            #[allow(clippy::undocumented_unsafe_blocks)]
            extern "C" fn #export_fn(#params) #ret {
                // SAFETY: the host wrote `len` bytes of JSON at `ptr` (from `alloc`) before this call.
                unsafe { ::helios_plugin_abi::__private::run_hook::<#spec>(#export, ptr, len, #call) }
            }

            #section
        };
    })
}

fn expand_guard(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new_spanned(attr, "#[chio_guard] takes no arguments"));
    }
    let f: ItemFn = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[chio_guard] applies to a function: `fn evaluate(req: GuardRequest) -> GuardVerdict`",
        )
    })?;
    let what = "a chio guard";
    let arg = check_signature(&f, what, "the `GuardRequest`")?;
    if let ReturnType::Default = f.sig.output {
        return Err(syn::Error::new(
            f.sig.paren_token.span.close(),
            "a chio guard must return its verdict: add `-> GuardVerdict`",
        ));
    }

    let name = &f.sig.ident;
    let (evaluate, deny_reason) = (fixed_export(abi::EVALUATE)?, fixed_export(abi::CHIO_DENY_REASON)?);
    let (eval_params, eval_ret) = extern_sig(evaluate.name, &evaluate.sig, &["ptr", "len"])?;
    let (reason_params, reason_ret) = extern_sig(deny_reason.name, &deny_reason.sig, &["buf_ptr", "buf_len"])?;
    let (evaluate, deny_reason) = (evaluate.name, deny_reason.name);
    let req = quote!(::helios_plugin_abi::__private::GuardRequest);
    let verdict = quote!(::helios_plugin_abi::__private::GuardVerdict);
    let (check, call) = match arg {
        Arg::ByRef => (
            quote_spanned!(name.span()=> const _: for<'__a> fn(&'__a #req) -> #verdict = #name;),
            quote!(|req: #req| #name(&req)),
        ),
        Arg::ByValue => (quote_spanned!(name.span()=> const _: fn(#req) -> #verdict = #name;), quote!(#name)),
    };
    let section = section_static(&quote!(::helios_plugin_abi::__private::SECTION_KEY_GUARD), evaluate);
    // The SDK's `component` feature picks the block: a core module (chio's core convention) or a
    // component of chio:guard/guard@0.2.0 (wit-bindgen's export of the same function).
    Ok(quote! {
        #f

        #check

        ::helios_plugin_abi::__helios_guard_exports! {
            core: {
                #[cfg(target_arch = "wasm32")]
                const _: () = {
                    #[unsafe(export_name = #evaluate)]
                    #[allow(clippy::undocumented_unsafe_blocks)]
                    extern "C" fn __helios_guard_evaluate(#eval_params) #eval_ret {
                        // SAFETY: the host wrote `len` bytes of JSON at `ptr` (from `chio_alloc`) before this call.
                        unsafe { ::helios_plugin_abi::__private::run_guard(ptr, len, #call) }
                    }

                    #[unsafe(export_name = #deny_reason)]
                    #[allow(clippy::undocumented_unsafe_blocks)]
                    extern "C" fn __helios_guard_deny_reason(#reason_params) #reason_ret {
                        // SAFETY: the host offers `buf_len` writable bytes at `buf_ptr` for the reason.
                        unsafe { ::helios_plugin_abi::__private::write_deny_reason(buf_ptr, buf_len) }
                    }

                    #section
                };
            }
            component: {
                #[cfg(target_arch = "wasm32")]
                const _: () = {
                    struct __HeliosComponentGuard;
                    impl ::helios_plugin_abi::component::Guest for __HeliosComponentGuard {
                        fn evaluate(
                            request: ::helios_plugin_abi::component::WitGuardRequest,
                        ) -> ::helios_plugin_abi::component::WitVerdict {
                            ::helios_plugin_abi::component::run_guard(request, #call)
                        }
                    }
                    ::helios_plugin_abi::component::export_guard!(
                        __HeliosComponentGuard with_types_in ::helios_plugin_abi::component
                    );

                    #section
                };
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated signatures are the table's: a hook export is `(ptr: i32, len: i32) -> i64`
    /// because `abi::HOOK_SIG` says so, `evaluate` returns `i32`, `chio_free` returns nothing.
    #[test]
    fn extern_signatures_come_from_the_schema_tables() {
        let show = |(p, r): (TokenStream, TokenStream)| format!("({p}) {r}");
        assert_eq!(
            show(extern_sig("pre_query", &abi::HOOK_SIG, &["ptr", "len"]).unwrap()),
            "(ptr : i32 , len : i32) -> i64"
        );
        let eval = fixed_export(abi::EVALUATE).unwrap();
        assert_eq!(show(extern_sig(eval.name, &eval.sig, &["ptr", "len"]).unwrap()), "(ptr : i32 , len : i32) -> i32");
        let free = fixed_export(abi::CHIO_FREE).unwrap();
        assert_eq!(show(extern_sig(free.name, &free.sig, &["p", "n"]).unwrap()), "(p : i32 , n : i32) ");
        let e = extern_sig(eval.name, &eval.sig, &["ptr"]).unwrap_err().to_string();
        assert!(e.contains(abi::EVALUATE) && e.contains("(i32, i32) -> (i32)"), "{e}");
        assert!(fixed_export("pre_query").is_err(), "hook exports are typed by HOOK_SIG, not listed");
    }
}
