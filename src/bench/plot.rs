//! PNG plots of a run's timeline: throughput and latency over time, drawn
//! with plotters, next to the run's JSON summary.
//!
//! Text needs a TrueType font, read from the system (DejaVu Sans, which
//! Debian's fonts-dejavu-core installs, or Liberation Sans); without one
//! the plots are not drawn and the run says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use super::{Run, Summary};
use crate::error::{Error, Result};

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a system font as plotters' "sans-serif", once.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        for path in FONTS {
            if let Ok(bytes) = std::fs::read(path) {
                // Registered fonts live for the process: leaked once.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "no TrueType font found for the plots (looked for {}); install fonts-dejavu-core",
            FONTS.join(", ")
        )))
    }
}

fn drawing(e: impl std::fmt::Display) -> Error {
    Error::Protocol(format!("drawing a plot: {e}"))
}

/// Writes `<stem>-<workload>-throughput.png` and
/// `<stem>-<workload>-latency.png` beside `json` for every run.
pub fn write(summary: &Summary, json: &Path) -> Result<Vec<PathBuf>> {
    font()?;
    let mut written = Vec::new();
    for run in &summary.runs {
        written.extend(write_run(summary, run, json)?);
    }
    Ok(written)
}

fn write_run(summary: &Summary, run: &Run, json: &Path) -> Result<Vec<PathBuf>> {
    let stem = json.with_extension("");
    let workload = run.workload.name().to_lowercase();
    let name = |suffix: &str| PathBuf::from(format!("{}-{workload}-{suffix}.png", stem.display()));
    let open = match run.rate_per_sec {
        0 => String::new(),
        r => format!(", {r}/s due"),
    };
    let title = format!(
        "{} workload {} ({:?}), {} connections{open}",
        summary.label,
        run.workload.name(),
        run.distribution,
        summary.concurrency
    );
    let seconds = run.timeline.len().max(1) as u64;

    let throughput = name("throughput");
    {
        let root = BitMapBackend::new(&throughput, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let max = run
            .timeline
            .iter()
            .map(|s| s.requests)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("throughput: {title}"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0u64..seconds, 0u64..max + max / 10)
            .map_err(drawing)?;
        chart
            .configure_mesh()
            .x_desc("second")
            .y_desc("operations per second")
            .draw()
            .map_err(drawing)?;
        chart
            .draw_series(LineSeries::new(
                run.timeline.iter().map(|s| (s.second, s.requests)),
                &BLUE,
            ))
            .map_err(drawing)?;
        root.present().map_err(drawing)?;
    }

    let latency = name("latency");
    {
        let root = BitMapBackend::new(&latency, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let ms = |us: u64| us as f64 / 1000.0;
        let max = run
            .timeline
            .iter()
            .map(|s| ms(s.p99_us))
            .fold(0.1, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("latency: {title}"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0u64..seconds, 0f64..max * 1.1)
            .map_err(drawing)?;
        chart
            .configure_mesh()
            .x_desc("second")
            .y_desc("ms")
            .draw()
            .map_err(drawing)?;
        for (label, color, pick) in [
            (
                "p50",
                BLUE,
                (|s: &super::timeline::Second| s.p50_us) as fn(&_) -> u64,
            ),
            ("p99", RED, |s: &super::timeline::Second| s.p99_us),
        ] {
            chart
                .draw_series(LineSeries::new(
                    run.timeline.iter().map(|s| (s.second, ms(pick(s)))),
                    &color,
                ))
                .map_err(drawing)?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(drawing)?;
        root.present().map_err(drawing)?;
    }
    Ok(vec![throughput, latency])
}
