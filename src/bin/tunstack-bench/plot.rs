//! The plot: the scale test's 1-byte TCP round trip against the number of open
//! connections (`Scale: TCP 1-byte RTT p50 at K open conns`, and p99), tunstack against the
//! kernel, medians over runs, as an SVG line chart with the connection counts as equally
//! spaced categories.

use crate::record::{median, parse_line};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

/// The sides drawn, with their colours.
const SIDES: [(&str, RGBColor); 2] = [
    ("tunstack", RGBColor(31, 119, 180)),
    ("kernel", RGBColor(214, 39, 40)),
];

/// The percentiles drawn.
const PERCENTILES: [&str; 2] = ["p50", "p99"];

/// The chart's title.
const TITLE: &str = "1-byte TCP round trip vs open connections";

/// One line of the chart: a side's percentile, the median per number of open connections.
#[derive(Debug, PartialEq)]
struct Series {
    side: &'static str,
    percentile: &'static str,
    /// (open connections, median round trip in µs), by open connections.
    points: Vec<(usize, f64)>,
}

/// `Scale: TCP 1-byte RTT p50 at 1000 open conns` → ("p50", 1000).
fn parse_metric(metric: &str) -> Option<(&str, usize)> {
    let rest = metric.strip_prefix("Scale: TCP 1-byte RTT ")?;
    let (percentile, rest) = rest.split_once(" at ")?;
    let open = rest.strip_suffix(" open conns")?.parse().ok()?;
    Some((percentile, open))
}

/// The series in `results` (lines `side<TAB>metric<TAB>unit<TAB>value`), in [`SIDES`] and
/// [`PERCENTILES`] order; those without a value are left out.
fn read_series(results: &str) -> Vec<Series> {
    // Values by (side, percentile), then by open connections.
    let mut values: BTreeMap<(usize, usize), BTreeMap<usize, Vec<f64>>> = BTreeMap::new();
    for (side, metric, _unit, value) in results.lines().filter_map(parse_line) {
        let Some((percentile, open)) = parse_metric(metric) else {
            continue;
        };
        let side = SIDES.iter().position(|&(name, _)| name == side);
        let percentile = PERCENTILES.iter().position(|&name| name == percentile);
        let value = Some(value).filter(|v| v.is_finite());
        if let (Some(side), Some(percentile), Some(value)) = (side, percentile, value) {
            let by_open = values.entry((side, percentile)).or_default();
            by_open.entry(open).or_default().push(value);
        }
    }
    values
        .into_iter()
        .map(|((side, percentile), by_open)| Series {
            side: SIDES[side].0,
            percentile: PERCENTILES[percentile],
            points: by_open
                .into_iter()
                .filter_map(|(open, mut runs)| Some((open, median(&mut runs)?)))
                .collect(),
        })
        .collect()
}

/// The x axis: every number of open connections that some series has, ascending.
fn categories(series: &[Series]) -> Vec<usize> {
    let mut all: Vec<usize> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(open, _)| open))
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// A short label for a number of connections: 0, 333, 1k, 3.3k, 33k, 100k, 1M.
fn conns_label(n: usize) -> String {
    let (value, suffix) = match n {
        0..1000 => return n.to_string(),
        1000..1_000_000 => (n as f64 / 1e3, "k"),
        _ => (n as f64 / 1e6, "M"),
    };
    let digits = if value < 9.95 { 1 } else { 0 };
    let text = format!("{value:.digits$}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text}{suffix}")
}

/// Reads `results` and draws the chart into the SVG file `out`.
pub fn draw(results: &Path, out: &Path) -> io::Result<()> {
    let text = fs::read_to_string(results)
        .map_err(|err| io::Error::new(err.kind(), format!("plot: {}: {err}", results.display())))?;
    let series = read_series(&text);
    if series.is_empty() {
        return Err(io::Error::other(format!(
            "plot: {} has no `Scale: TCP 1-byte RTT p50 at K open conns` (or p99) values \
             of tunstack or kernel; run the scale test with --rtt-steps",
            results.display()
        )));
    }
    chart(&series, out)
        .map_err(|err| io::Error::other(format!("plot: drawing {}: {err}", out.display())))
}

/// Draws `series` (not empty) into the SVG file `out`.
fn chart(series: &[Series], out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let categories = categories(series);
    let last = i32::try_from(categories.len())? - 1;
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(_, us)| us))
        .fold(0.0, f64::max);
    // Room above the highest point for the legend, in the upper left corner.
    let top = if top > 0.0 { top * 1.3 } else { 1.0 };

    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(TITLE, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((0..last).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(categories.len() + 1)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => usize::try_from(*i)
                .ok()
                .and_then(|i| categories.get(i))
                .map_or(String::new(), |&n| conns_label(n)),
            _ => String::new(),
        })
        .y_label_formatter(&|us| format!("{us:.0}"))
        .label_style(("sans-serif", 14))
        .light_line_style(TRANSPARENT)
        .x_desc("open connections")
        .y_desc("round trip (µs)")
        .axis_desc_style(("sans-serif", 16))
        .draw()?;

    for line in series {
        let (style, marker) = look(line);
        let points: Vec<(SegmentValue<i32>, f64)> = line
            .points
            .iter()
            .filter_map(|&(open, us)| {
                let i = categories.iter().position(|&c| c == open)?;
                Some((SegmentValue::CenterOf(i32::try_from(i).ok()?), us))
            })
            .collect();
        let label = format!("{} {}", line.side, line.percentile);
        let drawn = if line.percentile == "p50" {
            chart.draw_series(LineSeries::new(points.clone(), style))?
        } else {
            chart.draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))?
        };
        drawn.label(label).legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (24, 0)], style)
                + Circle::new((12, 0), MARKER_SIZE, marker)
        });
        chart.draw_series(
            points
                .into_iter()
                .map(|point| Circle::new(point, MARKER_SIZE, marker)),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Radius of the circles marking the points.
const MARKER_SIZE: u32 = 4;

/// How a series looks, its line and its markers: p50 in full colour with filled circles,
/// p99 lighter with open circles (and dashed, see [`chart`]).
fn look(series: &Series) -> (ShapeStyle, ShapeStyle) {
    let colour = SIDES
        .iter()
        .find(|&&(name, _)| name == series.side)
        .map_or(BLACK, |&(_, colour)| colour);
    if series.percentile == "p50" {
        (colour.stroke_width(2), colour.filled())
    } else {
        let light = colour.mix(0.55);
        (light.stroke_width(2), light.stroke_width(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESULTS: &str = "\
tunstack\tScale: TCP 1-byte RTT p50 at 0 open conns\tµs\t40
tunstack\tScale: TCP 1-byte RTT p99 at 0 open conns\tµs\t80
tunstack\tScale: TCP 1-byte RTT p50 at 1000 open conns\tµs\t50
tunstack\tScale: TCP 1-byte RTT p50 at 1000 open conns\tµs\t70
tunstack\tScale: TCP 1-byte RTT p50 at 1000 open conns\tµs\t60
tunstack\tScale: TCP 1-byte RTT p50 at 100000 open conns\tµs\t90
tunstack\tScale: TCP 1-byte RTT p50 at 100000 open conns\tµs\tNaN
kernel\tScale: TCP 1-byte RTT p50 at 0 open conns\tµs\t10
kernel\tScale: TCP 1-byte RTT p50 at 0 open conns\tµs\t20
kernel\tScale: TCP 1-byte RTT p50 at 3333 open conns\tµs\t12
kernel\tScale: TCP 1-byte RTT p50, 1000 idle conns\tµs\t11
bare\tScale: TCP 1-byte RTT p50 at 0 open conns\tµs\t1
kernel\tScale: TCP 1-byte RTT p75 at 0 open conns\tµs\t1
tunstack\tScale: TCP 1-byte RTT p50 at 10 open conns, MTU 9000\tµs\t1
a broken line
";

    #[test]
    fn parses_metric_names() {
        let parse = parse_metric;
        assert_eq!(
            parse("Scale: TCP 1-byte RTT p99 at 3333 open conns"),
            Some(("p99", 3333))
        );
        assert_eq!(parse("Scale: TCP 1-byte RTT p50, 1000 idle conns"), None);
        assert_eq!(parse("Scale: TCP 1-byte RTT p50 at many open conns"), None);
        assert_eq!(parse("TCP 1-byte RTT p50"), None);
    }

    #[test]
    fn series_of_medians() {
        let series = read_series(RESULTS);
        let expected = [
            (
                "tunstack",
                "p50",
                vec![(0, 40.0), (1000, 60.0), (100_000, 90.0)],
            ),
            ("tunstack", "p99", vec![(0, 80.0)]),
            ("kernel", "p50", vec![(0, 15.0), (3333, 12.0)]),
        ];
        let expected: Vec<Series> = expected
            .into_iter()
            .map(|(side, percentile, points)| Series {
                side,
                percentile,
                points,
            })
            .collect();
        assert_eq!(series, expected);
        assert_eq!(categories(&series), [0, 1000, 3333, 100_000]);
        assert!(read_series("kernel\tTCP 1-byte RTT p50\tµs\t20\n").is_empty());
    }

    #[test]
    fn connection_labels() {
        let labels: Vec<String> = [0, 10, 333, 1000, 1500, 3333, 9999, 10_000, 33_333]
            .into_iter()
            .chain([100_000, 333_333, 1_000_000, 3_333_333])
            .map(conns_label)
            .collect();
        let expected = [
            "0", "10", "333", "1k", "1.5k", "3.3k", "10k", "10k", "33k", "100k", "333k", "1M",
            "3.3M",
        ];
        assert_eq!(labels, expected);
    }

    #[test]
    fn draws_an_svg() {
        let dir = std::env::temp_dir().join(format!("tunstack-bench-plot-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (results, out) = (dir.join("results.tsv"), dir.join("plot.svg"));
        fs::write(&results, RESULTS).unwrap();
        draw(&results, &out).unwrap();
        let svg = fs::read_to_string(&out).unwrap();
        fs::write(&results, "kernel\tTCP 1-byte RTT p50\tµs\t20\n").unwrap();
        let missing = draw(&results, &dir.join("none.svg")).unwrap_err();
        fs::remove_dir_all(&dir).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains(TITLE), "{svg}");
        for text in [
            "tunstack p50",
            "kernel p50",
            "3.3k",
            "100k",
            "open connections",
        ] {
            assert!(svg.contains(text), "{text} missing from {svg}");
        }
        assert!(missing.to_string().contains("--rtt-steps"), "{missing}");
    }
}
