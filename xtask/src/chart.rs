//! Grouped bar charts as SVG (plotters), for the benchmark reports.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One group of bars per row (`(label, one value per series)`), one colour per series.
pub fn bars(path: &Path, title: &str, series: &[&str], rows: &[(String, Vec<f64>)]) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let max = rows.iter().flat_map(|r| r.1.iter().copied()).fold(0.0_f64, f64::max).max(1.0) * 1.12;
    let n = rows.len().max(1);
    let height = 120 + 64 * n as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..max, 0.0..n as f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("transactions per second")
        .draw()
        .map_err(|e| err(&e))?;
    // Each group's name above its bars, first row on top.
    let names = rows
        .iter()
        .enumerate()
        .map(|(i, r)| Text::new(r.0.clone(), (max * 0.003, (n - 1 - i) as f64 + 0.97), ("sans-serif", 14).into_font()));
    chart.draw_series(names).map_err(|e| err(&e))?;
    let palette = [RGBColor(52, 101, 164), RGBColor(237, 125, 49), RGBColor(112, 173, 71)];
    let k = series.len().max(1) as f64;
    for (s, name) in series.iter().enumerate() {
        let color = palette[s % palette.len()];
        let bars = rows.iter().enumerate().map(move |(i, r)| {
            let v = r.1.get(s).copied().unwrap_or(0.0);
            let slot = (n - 1 - i) as f64;
            let top = slot + 0.68 - 0.64 * s as f64 / k;
            Rectangle::new([(0.0, top - 0.64 / k + 0.03), (v, top)], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        let values = rows.iter().enumerate().map(move |(i, r)| {
            let v = r.1.get(s).copied().unwrap_or(0.0);
            let slot = (n - 1 - i) as f64;
            let mid = slot + 0.68 - 0.64 * s as f64 / k - 0.06;
            Text::new(format!(" {v:.0}"), (v, mid), ("sans-serif", 12).into_font())
        });
        chart.draw_series(values).map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bars_are_an_svg_with_every_label_and_value() {
        let path = std::env::temp_dir().join(format!("helios-chart-{}.svg", std::process::id()));
        let rows =
            vec![("PgBouncer".to_owned(), vec![6880.0, 6374.0]), ("helios-proxy".to_owned(), vec![11296.0, 0.0])];
        super::bars(&path, "pgbench -S", &["-M simple", "-M extended"], &rows).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in ["PgBouncer", "helios-proxy", "-M simple", "-M extended", "6880", "11296", "pgbench -S"] {
            assert!(svg.contains(text), "{text} missing from the chart");
        }
        assert!(svg.matches("<rect").count() >= 4, "one bar per value");
    }
}
