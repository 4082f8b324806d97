//! PNG plots of a `rentals` sweep (plotters' bitmap backend; the font is embedded from a
//! crate, so no system fonts or fontconfig are needed):
//!
//! - `rentals-<db>-throughput.png`: rentals to LENT per second against users, beside the
//!   baseline's transactions per second × 0.25 (the target line);
//! - `rentals-<db>-latency.png`: p99 of CreateRental and of CreateRental -> LENT, and the p50
//!   of CreateRental -> LENT, against users (ms).

use std::path::Path;

use anyhow::{Context, bail};
use plotters::prelude::*;

use crate::rentals::RentalsReport;

/// The font family every label uses.
const FONT: &str = "sans-serif";

/// Registers the embedded font once.
fn font() -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .is_ok()
    });
    if !ok {
        bail!("the embedded font could not be loaded");
    }
    Ok(())
}

/// Draws both plots of `report` into `dir`; returns the files written.
pub fn rentals(report: &RentalsReport, dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if report.points.is_empty() {
        bail!("nothing to plot: the report has no points");
    }
    let users: Vec<f64> = report.points.iter().map(|p| p.users as f64).collect();
    let x_max = users.iter().copied().fold(1.0, f64::max) * 1.5;
    let x_range = (0.8f64..x_max).log_scale();

    let throughput = dir.join(format!("rentals-{}-throughput.png", report.database));
    {
        let rentals: Vec<(f64, f64)> = report
            .points
            .iter()
            .map(|p| (p.users as f64, p.rentals_per_sec))
            .collect();
        let target: Vec<(f64, f64)> = report
            .points
            .iter()
            .filter_map(|p| p.baseline_tps.map(|tps| (p.users as f64, tps * 0.25)))
            .collect();
        let y_max = rentals
            .iter()
            .chain(&target)
            .map(|(_, y)| *y)
            .fold(1.0, f64::max)
            * 1.15;
        let root = BitMapBackend::new(&throughput, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Rentals to LENT per second ({})", report.database),
                (FONT, 24),
            )
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range.clone(), 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("users renting at once")
            .y_desc("per second")
            .label_style((FONT, 15))
            .draw()?;
        chart
            .draw_series(LineSeries::new(rentals.clone(), BLUE.stroke_width(2)))?
            .label("rentals/s")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart.draw_series(rentals.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
        if !target.is_empty() {
            chart
                .draw_series(LineSeries::new(target.clone(), RED.stroke_width(2)))?
                .label("0.25 x baseline tps (target)")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
            chart.draw_series(target.iter().map(|p| Circle::new(*p, 4, RED.filled())))?;
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()
            .with_context(|| format!("cannot write {}", throughput.display()))?;
    }

    let latency = dir.join(format!("rentals-{}-latency.png", report.database));
    {
        let series = [
            (
                "CreateRental p99",
                GREEN,
                report
                    .points
                    .iter()
                    .map(|p| (p.users as f64, p.create_ms.p99))
                    .collect::<Vec<_>>(),
            ),
            (
                "CreateRental -> LENT p99",
                RED,
                report
                    .points
                    .iter()
                    .map(|p| (p.users as f64, p.create_to_lent_ms.p99))
                    .collect(),
            ),
            (
                "CreateRental -> LENT p50",
                BLUE,
                report
                    .points
                    .iter()
                    .map(|p| (p.users as f64, p.create_to_lent_ms.p50))
                    .collect(),
            ),
        ];
        let y_max = series
            .iter()
            .flat_map(|(_, _, points)| points.iter().map(|(_, y)| *y))
            .fold(1.0, f64::max)
            * 1.15;
        let root = BitMapBackend::new(&latency, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Rental latency against load ({})", report.database),
                (FONT, 24),
            )
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("users renting at once")
            .y_desc("milliseconds")
            .label_style((FONT, 15))
            .draw()?;
        for (name, colour, points) in series {
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, colour.filled())))?;
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()
            .with_context(|| format!("cannot write {}", latency.display()))?;
    }
    eprintln!(
        "fleet-sim: plots written: {}, {}",
        throughput.display(),
        latency.display()
    );
    Ok(vec![throughput, latency])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rentals::RentalsPoint;

    #[test]
    fn a_sweep_is_drawn_into_two_png_files() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let points = [1, 4, 16]
            .into_iter()
            .map(|users| RentalsPoint {
                users,
                rentals_per_sec: users as f64 * 2.0,
                baseline_tps: Some(100.0),
                ..RentalsPoint::default()
            })
            .collect();
        let report = RentalsReport {
            database: "sqlite".into(),
            kiosks: 2,
            bays: 10,
            duration_secs: 1.0,
            cpus: 2,
            points,
        };
        let files = rentals(&report, dir.path()).expect("plots drawn");
        assert_eq!(files.len(), 2);
        for file in files {
            let bytes = std::fs::read(&file).expect("plot written");
            assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", file.display());
        }
    }
}
