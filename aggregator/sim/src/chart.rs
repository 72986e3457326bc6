//! The chart of `simulate`: one SVG, four panels over the same time axis, so that a person
//! sees at a glance what the strategy asked for and why: the bank voltage against the CVL, the
//! highest and lowest cell, the current between -DCL and CCL, and the SoC with the spans in
//! which DC-coupled PV feed-in was off.

use std::ops::Range;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::offline::Sample;
use crate::Error;

/// The drawing's size in pixels.
const SIZE: (u32, u32) = (1400, 1100);
/// At most this many buckets per line: a week at one sample a minute stays a small file, and
/// each bucket keeps its lowest and highest point, so no peak is lost.
const BUCKETS: usize = 1400;

const VOLTAGE: RGBColor = RGBColor(31, 119, 180);
const LIMIT: RGBColor = RGBColor(214, 39, 40);
const LOW: RGBColor = RGBColor(44, 160, 44);
const DISCHARGE: RGBColor = RGBColor(255, 127, 14);
const SOC: RGBColor = RGBColor(148, 103, 189);
const FEED_IN_OFF: RGBColor = RGBColor(255, 200, 200);
/// What the device published, beside a replay.
const RECORDED: RGBColor = RGBColor(90, 90, 90);
/// What the device's shadow strategy computed, beside a replay.
const SHADOW: RGBColor = RGBColor(23, 190, 207);

/// One line of a panel.
struct Line<'a> {
    label: &'a str,
    color: RGBColor,
    dashed: bool,
    value: fn(&Sample) -> Option<f64>,
}

/// A solid line (a measured value).
fn measured<'a>(label: &'a str, color: RGBColor, value: fn(&Sample) -> Option<f64>) -> Line<'a> {
    Line {
        label,
        color,
        dashed: false,
        value,
    }
}

/// A dashed line (a limit).
fn limit<'a>(label: &'a str, color: RGBColor, value: fn(&Sample) -> Option<f64>) -> Line<'a> {
    Line {
        label,
        color,
        dashed: true,
        value,
    }
}

/// The SVG text of the chart of `samples`, titled `title`.
pub fn render(samples: &[Sample], title: &str) -> Result<String, Error> {
    let first = samples.first().ok_or(Error::NothingSimulated)?;
    let hours = samples
        .last()
        .map_or(0.0, |s| s.elapsed_s / 3600.0)
        .max(1.0 / 60.0);
    let axis = TimeAxis {
        start_s: first.second_of_day,
        start_date: first.date,
        hours,
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let root = root
            .titled(title, ("sans-serif", 24).into_font())
            .map_err(draw_error)?;
        let panels = root.split_evenly((4, 1));
        let recorded = samples.iter().any(|s| beside(s, false).is_some());
        let shadow = samples.iter().any(|s| beside(s, true).is_some());
        let mut bank = vec![
            measured("bank voltage", VOLTAGE, |s| s.bank_v),
            limit("CVL", LIMIT, |s| Some(s.cvl_v)),
        ];
        if recorded {
            bank.push(limit("CVL published", RECORDED, |s| {
                beside(s, false).map(|p| p.cvl_v)
            }));
        }
        if shadow {
            bank.push(limit("CVL shadow", SHADOW, |s| {
                beside(s, true).map(|p| p.cvl_v)
            }));
        }
        panel(&panels[0], &axis, samples, "Bank voltage (V)", &bank, None)?;
        let cells = [
            measured("highest cell", LIMIT, |s| s.max_cell_v),
            measured("lowest cell", LOW, |s| s.min_cell_v),
        ];
        panel(&panels[1], &axis, samples, "Cell voltage (V)", &cells, None)?;
        let mut currents = vec![
            measured("current (+ charging)", VOLTAGE, |s| s.current_a),
            limit("CCL", LIMIT, |s| Some(s.ccl_a)),
            limit("-DCL", DISCHARGE, |s| Some(-s.dcl_a)),
        ];
        let mut soc = vec![measured("SoC", SOC, |s| s.soc_pct)];
        if recorded {
            currents.push(limit("CCL published", RECORDED, |s| {
                beside(s, false).map(|p| p.ccl_a)
            }));
            currents.push(limit("-DCL published", RECORDED, |s| {
                beside(s, false).map(|p| -p.dcl_a)
            }));
            soc.push(limit("SoC published", RECORDED, |s| {
                beside(s, false).and_then(|p| p.soc_pct)
            }));
        }
        if shadow {
            currents.push(limit("CCL shadow", SHADOW, |s| {
                beside(s, true).map(|p| p.ccl_a)
            }));
            currents.push(limit("-DCL shadow", SHADOW, |s| {
                beside(s, true).map(|p| -p.dcl_a)
            }));
        }
        panel(&panels[2], &axis, samples, "Current (A)", &currents, None)?;
        let percent = Some(0.0..100.0);
        panel(
            &panels[3],
            &axis,
            samples,
            "State of charge (%)",
            &soc,
            percent,
        )?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// A replay's recorded values (`shadow`: the shadow strategy's) of a sample.
fn beside(s: &Sample, shadow: bool) -> Option<&aggregator::record::PublishedValues> {
    let b = s.beside.as_ref()?;
    if shadow {
        b.shadow.as_ref()
    } else {
        b.recorded.as_ref()
    }
}

fn draw_error(err: impl std::fmt::Display) -> Error {
    Error::Chart(format!("cannot draw the chart: {err}"))
}

/// Time since the start on the x axis, in hours for up to two days and in days beyond (so the
/// round numbers the axis picks fall on whole hours or midnights), labelled with the local
/// date and time.
struct TimeAxis {
    start_s: f64,
    start_date: plugin_api::LocalDate,
    hours: f64,
}

impl TimeAxis {
    /// Hours per unit of the axis.
    fn unit_h(&self) -> f64 {
        if self.hours > 48.0 {
            24.0
        } else {
            1.0
        }
    }

    fn x(&self, elapsed_s: f64) -> f64 {
        elapsed_s / 3600.0 / self.unit_h()
    }

    fn label(&self, x: f64) -> String {
        let total_s = self.start_s + x * self.unit_h() * 3600.0;
        let days = (total_s / 86_400.0).floor();
        let date = self.start_date.add_days(days as i64);
        let minute = ((total_s - days * 86_400.0) / 60.0).round() as i64;
        let clock = format!("{:02}:{:02}", minute / 60, minute % 60);
        if self.hours > 24.0 {
            format!("{:02}-{:02} {clock}", date.month, date.day)
        } else {
            clock
        }
    }
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    axis: &TimeAxis,
    samples: &[Sample],
    y_label: &str,
    lines: &[Line<'_>],
    fixed_range: Option<Range<f64>>,
) -> Result<(), Error> {
    let values = lines
        .iter()
        .flat_map(|line| samples.iter().filter_map(line.value));
    let y = fixed_range.unwrap_or_else(|| padded(values));
    let x = 0.0..axis.x(axis.hours * 3600.0);
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .margin_right(40)
        .x_label_area_size(34)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y.clone())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .y_desc(y_label)
        .x_desc("local time")
        // A label a day, at most a month's worth (a recording's damaged time must not ask
        // for millions).
        .x_labels(if axis.hours > 48.0 {
            (axis.hours / 24.0).min(31.0) as usize + 1
        } else {
            13
        })
        .x_label_formatter(&|h| axis.label(*h))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_error)?;

    if lines.iter().any(|l| l.label == "SoC") {
        feed_in_spans(&mut chart, axis, samples, &y)?;
    }
    for line in lines {
        let points = thinned(axis, samples, line.value);
        let style = line.color.stroke_width(2);
        let color = line.color;
        let series = if line.dashed {
            chart.draw_series(DashedLineSeries::new(points, 8, 4, style))
        } else {
            chart.draw_series(LineSeries::new(points, style))
        };
        series
            .map_err(draw_error)?
            .label(line.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(draw_error)
}

/// Shades the spans with feed-in off (setting 0), with a legend entry.
fn feed_in_spans<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    axis: &TimeAxis,
    samples: &[Sample],
    y: &Range<f64>,
) -> Result<(), Error> {
    let mut spans = Vec::new();
    let mut from: Option<f64> = None;
    for s in samples {
        let h = axis.x(s.elapsed_s);
        match (s.feed_in == Some(0), from) {
            (true, None) => from = Some(h),
            (false, Some(start)) => {
                spans.push((start, h));
                from = None;
            }
            _ => {}
        }
    }
    if let (Some(start), Some(last)) = (from, samples.last()) {
        spans.push((start, axis.x(last.elapsed_s)));
    }
    let fill = FEED_IN_OFF.filled();
    chart
        .draw_series(
            spans
                .into_iter()
                .map(|(a, b)| Rectangle::new([(a, y.start), (b, y.end)], fill)),
        )
        .map_err(draw_error)?
        .label("feed-in off")
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], fill));
    Ok(())
}

/// The range of `values` with a little room above and below.
fn padded(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !low.is_finite() {
        return 0.0..1.0;
    }
    let room = ((high - low) * 0.08).max(high.abs().max(1.0) * 0.002);
    (low - room)..(high + room * 2.5)
}

/// The points of a line on the time axis, at most two per bucket (its lowest and highest, in time
/// order); a sample without a value breaks nothing, it is left out.
fn thinned(
    axis: &TimeAxis,
    samples: &[Sample],
    value: fn(&Sample) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| value(s).map(|v| (axis.x(s.elapsed_s), v)))
        .collect();
    if points.len() <= 2 * BUCKETS {
        return points;
    }
    let per_bucket = points.len().div_ceil(BUCKETS);
    let mut kept = Vec::with_capacity(2 * BUCKETS + 1);
    for bucket in points.chunks(per_bucket) {
        let low = bucket
            .iter()
            .copied()
            .fold(bucket[0], |a, b| if b.1 < a.1 { b } else { a });
        let high = bucket
            .iter()
            .copied()
            .fold(bucket[0], |a, b| if b.1 > a.1 { b } else { a });
        if low.0 <= high.0 {
            kept.extend([low, high]);
        } else {
            kept.extend([high, low]);
        }
    }
    kept
}
