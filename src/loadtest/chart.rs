//! The sweep chart: CPU per forwarded packet against size (and the
//! baseline's, when given), so a flat cost shows as a flat line.

use std::path::Path;

use plotters::prelude::*;

use super::error::LoadTestError;
use super::sweep::Sweep;

type Series = Vec<(f64, f64)>;

/// Writes `sweep` as an SVG chart at `path`. Plots CPU µs per forwarded
/// packet when the server's CPU was read, forwarded packets/s otherwise.
pub fn write_svg(sweep: &Sweep, path: &Path) -> Result<(), LoadTestError> {
    let fail = |e: &dyn std::fmt::Display| LoadTestError::Output {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let cost: Vec<(f64, f64)> = sweep
        .steps
        .iter()
        .filter_map(|s| Some((s.value as f64, s.us_per_packet()?)))
        .collect();
    let (label, series, baseline): (&str, Series, Series) = if cost.is_empty() {
        let rate = sweep
            .steps
            .iter()
            .filter_map(|s| Some((s.value as f64, s.report.server.as_ref()?.forwarded_per_sec)))
            .collect();
        ("forwarded packets/s", rate, Vec::new())
    } else {
        let base = sweep
            .steps
            .iter()
            .filter_map(|s| Some((s.value as f64, s.baseline_us_per_packet?)))
            .collect();
        ("server CPU µs per forwarded packet", cost, base)
    };
    if series.is_empty() {
        return Err(fail(&"nothing to plot: the server's /metrics was not read"));
    }
    let x_max = series.iter().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_max = series
        .iter()
        .chain(baseline.iter())
        .map(|p| p.1)
        .fold(0.0, f64::max)
        * 1.2;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("callgate loadtest --scenario {}", sweep.scenario),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max.max(1e-9))
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc(sweep.param.as_str())
        .y_desc(label)
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(series.clone(), BLUE.stroke_width(2)))
        .map_err(|e| fail(&e))?
        .label("callgate")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(series.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
        .map_err(|e| fail(&e))?;
    if !baseline.is_empty() {
        chart
            .draw_series(LineSeries::new(baseline.clone(), RED.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label("baseline (limit relay)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .draw_series(baseline.iter().map(|p| Circle::new(*p, 4, RED.filled())))
            .map_err(|e| fail(&e))?;
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
