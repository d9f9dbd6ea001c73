;; wat-guard: a chio guard written by hand against chio's core ABI, without the SDK.
;;
;; It denies a tool call when the request JSON contains the bytes of config key `deny_substring`
;; (unset or empty: everything is allowed) and logs each deny through chio.log.
;;
;; Imports:  chio.get_config, chio.log
;; Exports:  memory, evaluate, chio_alloc (bump allocator), chio_deny_reason (plain UTF-8 reason)
;;
;; Memory layout (one 64 KiB page to start, grown by chio_alloc as needed):
;;      16 ..   30   the config key "deny_substring" (14 bytes)
;;      64 ..   99   the reason prefix `request contains denied substring "` (35 bytes)
;;     256 .. 1280   the config value, at most 1024 bytes
;;    1280 .. 2340   the reason of the last deny: prefix ++ value ++ `"` (at most 1060 bytes)
;;    4096 .. 4136   the reason given when the config value is too long (40 bytes)
;;    8192 ..        the heap of chio_alloc
(module
  (import "chio" "get_config" (func $get_config (param i32 i32 i32 i32) (result i32)))
  (import "chio" "log" (func $log (param i32 i32 i32)))

  (memory (export "memory") 1)

  (data (i32.const 16) "deny_substring")
  (data (i32.const 64) "request contains denied substring \"")
  (data (i32.const 4096) "deny_substring is longer than 1024 bytes")

  (global $heap_base i32 (i32.const 8192))
  ;; Next free heap byte. evaluate resets it: once judged, the request is garbage, and the host only
  ;; asks for more memory (the deny-reason buffer) after evaluate returns.
  (global $next (mut i32) (i32.const 8192))
  ;; The reason of the last verdict; a length of 0 means the last verdict was an allow.
  (global $reason_ptr (mut i32) (i32.const 0))
  (global $reason_len (mut i32) (i32.const 0))

  ;; chio_alloc(size) -> ptr: 8-byte aligned bump allocation, growing memory when needed. Traps
  ;; (so the host denies, fail-closed) on a negative size or when memory cannot grow: returning 0
  ;; would make the host write the request at offset 0, over the data above.
  (func (export "chio_alloc") (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $pages i32)
    (if (i32.lt_s (local.get $size) (i32.const 0)) (then unreachable))
    (local.set $p (i32.and (i32.add (global.get $next) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (if (i32.lt_u (local.get $end) (local.get $p)) (then unreachable))
    ;; pages needed to hold [0, end), computed in 64 bits so that it cannot wrap
    (local.set $pages
      (i32.wrap_i64 (i64.shr_u (i64.add (i64.extend_i32_u (local.get $end)) (i64.const 65535)) (i64.const 16))))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then unreachable))))
    (global.set $next (local.get $end))
    (local.get $p))

  ;; Whether needle [n, n+nl) occurs in haystack [h, h+hl); nl > 0.
  (func $contains (param $h i32) (param $hl i32) (param $n i32) (param $nl i32) (result i32)
    (local $i i32) (local $j i32)
    (block $not_found
      (loop $at
        (br_if $not_found (i32.gt_u (i32.add (local.get $i) (local.get $nl)) (local.get $hl)))
        (local.set $j (i32.const 0))
        (block $mismatch
          (loop $cmp
            (br_if $mismatch
              (i32.ne (i32.load8_u (i32.add (local.get $h) (i32.add (local.get $i) (local.get $j))))
                      (i32.load8_u (i32.add (local.get $n) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br_if $cmp (i32.lt_u (local.get $j) (local.get $nl)))
            (return (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $at)))
    (i32.const 0))

  ;; evaluate(ptr, len) -> 0 (allow) or 1 (deny), over the request bytes at [ptr, ptr+len).
  (func (export "evaluate") (param $ptr i32) (param $len i32) (result i32)
    (local $n i32) (local $verdict i32)
    (global.set $reason_len (i32.const 0))
    (local.set $n (call $get_config (i32.const 16) (i32.const 14) (i32.const 256) (i32.const 1024)))
    (block $done
      ;; -1: not configured; 0: empty. Either way there is nothing to deny.
      (br_if $done (i32.le_s (local.get $n) (i32.const 0)))
      ;; The value did not fit the buffer: refuse to guess, deny and say why (log level 4: error).
      (if (i32.gt_s (local.get $n) (i32.const 1024))
        (then
          (global.set $reason_ptr (i32.const 4096))
          (global.set $reason_len (i32.const 40))
          (call $log (i32.const 4) (i32.const 4096) (i32.const 40))
          (local.set $verdict (i32.const 1))
          (br $done)))
      (br_if $done
        (i32.eqz (call $contains (local.get $ptr) (local.get $len) (i32.const 256) (local.get $n))))
      ;; reason = prefix ++ value ++ '"'
      (memory.copy (i32.const 1280) (i32.const 64) (i32.const 35))
      (memory.copy (i32.const 1315) (i32.const 256) (local.get $n))
      (i32.store8 (i32.add (i32.const 1315) (local.get $n)) (i32.const 34))
      (global.set $reason_ptr (i32.const 1280))
      (global.set $reason_len (i32.add (local.get $n) (i32.const 36)))
      ;; log level 3: warn
      (call $log (i32.const 3) (global.get $reason_ptr) (global.get $reason_len))
      (local.set $verdict (i32.const 1)))
    (global.set $next (global.get $heap_base))
    (local.get $verdict))

  ;; chio_deny_reason(buf, cap) -> bytes written, or -1 after an allow. Writes the plain UTF-8
  ;; reason, cut at a character boundary when it is longer than the buffer.
  (func (export "chio_deny_reason") (param $buf i32) (param $cap i32) (result i32)
    (local $n i32)
    (if (i32.eqz (global.get $reason_len)) (then (return (i32.const -1))))
    (if (i32.le_s (local.get $cap) (i32.const 0)) (then (return (i32.const -1))))
    (local.set $n (global.get $reason_len))
    (if (i32.gt_u (local.get $n) (local.get $cap))
      (then
        (local.set $n (local.get $cap))
        ;; while the first byte left out is a UTF-8 continuation byte (10xxxxxx), leave out more
        (block $boundary
          (loop $back
            (br_if $boundary (i32.eqz (local.get $n)))
            (br_if $boundary
              (i32.ne (i32.and (i32.load8_u (i32.add (global.get $reason_ptr) (local.get $n))) (i32.const 0xC0))
                      (i32.const 0x80)))
            (local.set $n (i32.sub (local.get $n) (i32.const 1)))
            (br $back)))))
    (memory.copy (local.get $buf) (global.get $reason_ptr) (local.get $n))
    (local.get $n))
)
