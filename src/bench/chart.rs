//! `bench --chart FILE.svg`: the modes table (throughput against each
//! mode's baseline, latency percentiles) and the isolation matrix, drawn
//! with plotters as one SVG. Text is left to the viewer's own sans-serif:
//! no font is embedded or fetched.

use super::isolation::{self, IsolationBench};
use super::{BenchRow, ModesBench};
use crate::failure::CliError;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

const WIDTH: u32 = 1000;
const MODES_HEIGHT: u32 = 380;
const HEADER: u32 = 56;
const ROW: u32 = 26;
const FONT: &str = "sans-serif";
const BASELINE: RGBColor = RGBColor(160, 160, 160);
const SUPERVISED: RGBColor = RGBColor(33, 102, 172);
const LATENCY: [RGBColor; 4] = [
    RGBColor(146, 197, 222),
    RGBColor(33, 102, 172),
    RGBColor(244, 165, 130),
    RGBColor(178, 24, 43),
];
const CONTAINED: RGBColor = RGBColor(199, 233, 192);
const NOT_CONTAINED: RGBColor = RGBColor(252, 187, 161);

type Error = Box<dyn std::error::Error>;

/// Draws what ran into `path`.
pub(super) fn draw(
    path: &Path,
    modes: Option<&ModesBench>,
    iso: Option<&IsolationBench>,
) -> Result<(), CliError> {
    render(path, modes, iso)
        .map_err(|e| crate::failure::input(format!("cannot draw {}: {e}", path.display())))
}

fn render(
    path: &Path,
    modes: Option<&ModesBench>,
    iso: Option<&IsolationBench>,
) -> Result<(), Error> {
    let matrix_height = iso.map_or(0, |i| {
        HEADER + ROW * (misbehaviours(i).len() as u32 + 1) + 30
    });
    let height = modes.map_or(0, |_| MODES_HEIGHT) + matrix_height;
    let root = SVGBackend::new(path, (WIDTH, height.max(1))).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = match modes {
        Some(_) => root.split_vertically(MODES_HEIGHT),
        None => root.split_vertically(0),
    };
    if let Some(m) = modes {
        let (left, right) = top.split_horizontally(WIDTH / 2);
        throughput(&left, m)?;
        latency(&right, m)?;
    }
    if let Some(i) = iso {
        matrix(&bottom, i)?;
    }
    root.present()?;
    Ok(())
}

/// The modes measured, in order, with their baseline and supervised rows.
fn pairs(m: &ModesBench) -> Vec<(&str, &BenchRow, &BenchRow)> {
    let mut out = Vec::new();
    for row in m.rows.iter().filter(|r| r.kind == "supervised") {
        if let Some(base) = m
            .rows
            .iter()
            .find(|b| b.mode == row.mode && b.kind == "baseline")
        {
            out.push((row.mode.as_str(), base, row));
        }
    }
    out
}

/// Labels the integral x positions with the modes' names.
fn mode_label(names: &[String]) -> impl Fn(&f64) -> String + '_ {
    move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    }
}

/// An axis label: no needless decimals.
fn number(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let v: Vec<f64> = values.filter(|v| v.is_finite() && *v > 0.0).collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    if v.is_empty() {
        return 0.1..10.0;
    }
    (lo / 3.0)..(hi * 3.0)
}

/// A bar chart over the modes, on a log scale.
type ModeChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, LogCoord<f64>>>;

/// A bar chart with one x position per mode in `names`, over a log scale of
/// `range`, with its caption and axes drawn.
fn mode_chart<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: String,
    names: &[String],
    range: std::ops::Range<f64>,
    y_desc: &str,
) -> Result<ModeChart<'a, 'b>, Error> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5f64..(names.len() as f64 - 0.5), range.log_scale())?;
    let label = mode_label(names);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len().max(1))
        .x_label_formatter(&label)
        .y_desc(y_desc)
        .y_label_formatter(&|v| number(*v))
        .label_style((FONT, 13))
        .draw()?;
    Ok(chart)
}

fn throughput(area: &DrawingArea<SVGBackend, Shift>, m: &ModesBench) -> Result<(), Error> {
    let pairs = pairs(m);
    let names: Vec<String> = pairs.iter().map(|p| p.0.to_string()).collect();
    let range = log_range(
        pairs
            .iter()
            .flat_map(|p| [p.1.jobs_per_sec, p.2.jobs_per_sec]),
    );
    let floor = range.start;
    let mut chart = mode_chart(
        area,
        format!(
            "jobs/s against the bare baseline ({} cores, {})",
            m.cores, m.settings.backend
        ),
        &names,
        range,
        "jobs/s (log)",
    )?;
    chart
        .draw_series(pairs.iter().enumerate().map(|(i, p)| {
            let x = i as f64;
            Rectangle::new(
                [(x - 0.36, floor), (x - 0.02, p.1.jobs_per_sec)],
                BASELINE.filled(),
            )
        }))?
        .label("bare baseline")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], BASELINE.filled()));
    chart
        .draw_series(pairs.iter().enumerate().map(|(i, p)| {
            let x = i as f64;
            Rectangle::new(
                [(x + 0.02, floor), (x + 0.36, p.2.jobs_per_sec)],
                SUPERVISED.filled(),
            )
        }))?
        .label("jobvisor")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], SUPERVISED.filled()));
    let above = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(pairs.iter().enumerate().map(|(i, p)| {
        Text::new(
            format!("{:.0}/s, {:.2}x", p.2.jobs_per_sec, p.2.ratio),
            (i as f64 + 0.19, p.2.jobs_per_sec * 1.15),
            above.clone(),
        )
    }))?;
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

fn latency(area: &DrawingArea<SVGBackend, Shift>, m: &ModesBench) -> Result<(), Error> {
    let rows: Vec<&BenchRow> = pairs(m).into_iter().map(|p| p.2).collect();
    let names: Vec<String> = rows.iter().map(|r| r.mode.clone()).collect();
    let value = |r: &BenchRow, k: usize| match k {
        0 => r.start_p50_ms,
        1 => r.start_p99_ms,
        2 => r.total_p50_ms,
        _ => r.total_p99_ms,
    };
    let range = log_range(rows.iter().flat_map(|r| (0..4).map(move |k| value(r, k))));
    let floor = range.start;
    let mut chart = mode_chart(
        area,
        "latency one at a time, ms".to_string(),
        &names,
        range,
        "ms (log)",
    )?;
    let series = [
        "enqueue to start, p50",
        "enqueue to start, p99",
        "enqueue to end written, p50",
        "enqueue to end written, p99",
    ];
    for (k, name) in series.iter().enumerate() {
        let color = LATENCY[k];
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                let x = i as f64 - 0.38 + 0.19 * k as f64;
                Rectangle::new([(x, floor), (x + 0.17, value(r, k))], color.filled())
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// Draws the legend of `chart`'s series at `position`.
fn legend<'a, 'b: 'a>(
    chart: &mut ModeChart<'a, 'b>,
    position: SeriesLabelPosition,
) -> Result<(), Error> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// The misbehaviours of the matrix, in its order.
fn misbehaviours(i: &IsolationBench) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for row in &i.rows {
        if !out.contains(&row.misbehaviour.as_str()) {
            out.push(&row.misbehaviour);
        }
    }
    out
}

fn matrix(area: &DrawingArea<SVGBackend, Shift>, i: &IsolationBench) -> Result<(), Error> {
    let faults = misbehaviours(i);
    let mut modes: Vec<&str> = Vec::new();
    for row in &i.rows {
        if !modes.contains(&row.mode.as_str()) {
            modes.push(&row.mode);
        }
    }
    let title = TextStyle::from((FONT, 16).into_font());
    let small = TextStyle::from((FONT, 12).into_font());
    let centered = small.pos(Pos::new(HPos::Center, VPos::Center));
    let left = small.pos(Pos::new(HPos::Left, VPos::Center));
    let margin = 12i32;
    area.draw(&Text::new(
        "isolation: each fault in each mode, under a real `jobvisor serve` (green: contained)",
        (margin, 10),
        title.clone(),
    ))?;
    area.draw(&Text::new(
        format!(
            "timeout {} ms, process memory limit {}; detection time from start to end recorded",
            i.timeout_ms, i.memory_limit
        ),
        (margin, 32),
        small.clone(),
    ))?;
    let label_w = 110i32;
    let col_w = (WIDTH as i32 - 2 * margin - label_w) / modes.len().max(1) as i32;
    let top = HEADER as i32;
    let row_h = ROW as i32;
    for (c, mode) in modes.iter().enumerate() {
        let x = margin + label_w + c as i32 * col_w + col_w / 2;
        area.draw(&Text::new(
            (*mode).to_string(),
            (x, top + row_h / 2),
            centered.clone(),
        ))?;
    }
    for (r, fault) in faults.iter().enumerate() {
        let y = top + row_h * (r as i32 + 1);
        area.draw(&Text::new(
            (*fault).to_string(),
            (margin, y + row_h / 2),
            left.clone(),
        ))?;
        for (c, mode) in modes.iter().enumerate() {
            let Some(row) = i
                .rows
                .iter()
                .find(|row| row.misbehaviour == *fault && row.mode == *mode)
            else {
                continue;
            };
            let x0 = margin + label_w + c as i32 * col_w;
            let fill = if row.contained {
                CONTAINED
            } else {
                NOT_CONTAINED
            };
            area.draw(&Rectangle::new(
                [(x0 + 2, y + 2), (x0 + col_w - 2, y + row_h - 2)],
                fill.filled(),
            ))?;
            area.draw(&Text::new(
                isolation::short(row),
                (x0 + col_w / 2, y + row_h / 2),
                centered.clone(),
            ))?;
        }
    }
    Ok(())
}
