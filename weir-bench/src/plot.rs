//! `weir bench --plot FILE.svg|FILE.png`: forwarded Mpps per frame size
//! (median of the repeats, with min–max bars) per switch, and the one-way
//! latency CDF of each switch and size (the median-rate run).
//!
//! The format follows the extension. Text is laid out (and, in a PNG,
//! rasterised) with the Ubuntu Light font that the `epaint_default_fonts`
//! crate embeds, through plotters' `ab_glyph` feature: no system fonts,
//! fontconfig or freetype are needed. The PNG is encoded with the `png`
//! crate from plotters' RGB buffer.
//!
//! Control side only.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::backend::{BitMapBackend, DrawingBackend, SVGBackend};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::Report;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Why a plot was not written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The file name ends in neither `.svg` nor `.png`.
    #[error("--plot {}: the file name must end in .svg or .png", path.display())]
    Extension {
        /// The `--plot` path.
        path: PathBuf,
    },
    /// The font embedded for labels was refused by plotters.
    #[error("the embedded font does not load")]
    Font,
    /// Drawing or writing the SVG.
    #[error("drawing the SVG")]
    Svg(#[source] DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>),
    /// Drawing into the PNG's pixel buffer.
    #[error("drawing the PNG")]
    Bitmap(#[source] DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>),
    /// Creating the PNG file.
    #[error("creating the file")]
    Create(#[source] std::io::Error),
    /// Encoding or writing the PNG.
    #[error("writing the PNG {what}")]
    Png {
        /// Header, data or the end.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: png::EncodingError,
    },
}

/// Picture size in pixels (SVG user units).
const SIZE: (u32, u32) = (1280, 520);

/// Registers the embedded font as "sans-serif", once per process.
fn register_font() -> Result<(), PlotError> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let ok = *LOADED.get_or_init(|| {
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        )
        .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// Picture formats `--plot` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.svg`
    Svg,
    /// `.png`
    Png,
}

/// The format `path`'s extension asks for (checked before measuring).
///
/// # Errors
/// An extension other than `.svg` or `.png` (any case).
pub fn format(path: &Path) -> Result<Format, PlotError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("svg") => Ok(Format::Svg),
        Some("png") => Ok(Format::Png),
        _ => Err(PlotError::Extension {
            path: path.to_owned(),
        }),
    }
}

/// Draws `report` into `path`: an SVG for `.svg`, a PNG for `.png`.
///
/// # Errors
/// Another extension, or the file cannot be written.
pub fn draw(report: &Report, path: &Path) -> Result<(), PlotError> {
    let fmt = format(path)?;
    register_font()?;
    match fmt {
        Format::Svg => {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            draw_on(report, &root)
                .and_then(|()| root.present())
                .map_err(PlotError::Svg)
        }
        Format::Png => {
            let mut rgb = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
                draw_on(report, &root)
                    .and_then(|()| root.present())
                    .map_err(PlotError::Bitmap)?;
            }
            write_png(path, &rgb)
        }
    }
}

/// Writes an RGB buffer of [`SIZE`] as a PNG.
fn write_png(path: &Path, rgb: &[u8]) -> Result<(), PlotError> {
    let file = std::fs::File::create(path).map_err(PlotError::Create)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), SIZE.0, SIZE.1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let png = |what| move |source| PlotError::Png { what, source };
    let mut w = enc.write_header().map_err(png("header"))?;
    w.write_image_data(rgb).map_err(png("data"))?;
    w.finish().map_err(png("end"))
}

fn draw_on<DB: DrawingBackend>(
    report: &Report,
    root: &DrawingArea<DB, Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(620);
    draw_throughput(report, &left)?;
    draw_latency_cdf(report, &right)
}

/// Bars of the median forwarded Mpps per frame size and switch, with
/// min-max whiskers.
fn draw_throughput<DB: DrawingBackend>(
    report: &Report,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let sizes = &report.params.sizes;
    let switches = &report.params.switches;
    let top = report
        .aggregates
        .iter()
        .map(|a| a.rx_mpps.max)
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.15;
    let n = sizes.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption("forwarded Mpps per frame size", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(-0.5f64..n - 0.5, 0f64..top)?;
    chart
        .configure_mesh()
        .x_labels(sizes.len().max(1))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < sizes.len() {
                sizes[i as usize].clone()
            } else {
                String::new()
            }
        })
        .x_desc("frame bytes")
        .y_desc("Mpps (both directions)")
        .disable_x_mesh()
        .draw()?;
    let k = switches.len().max(1) as f64;
    let width = 0.8 / k;
    for (si, sw) in switches.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let bars: Vec<(f64, f64, f64, f64)> = report
            .aggregates
            .iter()
            .filter(|a| &a.switch == sw)
            .filter_map(|a| {
                let i = sizes.iter().position(|s| s == &a.size)? as f64;
                let x0 = i - 0.4 + width * si as f64;
                Some((x0, a.rx_mpps.median, a.rx_mpps.min, a.rx_mpps.max))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x0, med, _, _)| {
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, med)], color.filled())
            }))?
            .label(sw.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart.draw_series(bars.iter().map(|&(x0, _, lo, hi)| {
            let xm = x0 + width * 0.45;
            PathElement::new(vec![(xm, lo), (xm, hi)], BLACK.stroke_width(2))
        }))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The one-way latency CDF of each switch and size (its median-rate run),
/// on a log scale.
fn draw_latency_cdf<DB: DrawingBackend>(
    report: &Report,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let reps = report.representative();
    let max_ns = reps
        .values()
        .filter_map(|r| r.main.latency.cdf.last().map(|p| p.0))
        .max()
        .unwrap_or(1000)
        .max(1000);
    let min_ns = reps
        .values()
        .filter_map(|r| r.main.latency.cdf.first().map(|p| p.0))
        .min()
        .unwrap_or(100)
        .clamp(1, max_ns / 2);
    let mut chart = ChartBuilder::on(area)
        .caption("one-way latency CDF", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(
            ((min_ns as f64 / 1e3)..(max_ns as f64 / 1e3 * 1.2)).log_scale(),
            0f64..1.0,
        )?;
    chart
        .configure_mesh()
        .x_desc("latency (us, log)")
        .y_desc("fraction of frames")
        .draw()?;
    for (i, ((sw, size), r)) in reps.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = r
            .main
            .latency
            .cdf
            .iter()
            .map(|&(ns, q)| (ns.max(1) as f64 / 1e3, q))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(format!("{sw} {size}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_format_follows_the_extension() {
        assert_eq!(format(Path::new("a/b.svg")).unwrap(), Format::Svg);
        assert_eq!(format(Path::new("b.PNG")).unwrap(), Format::Png);
        assert!(format(Path::new("b.pdf")).is_err());
        assert!(format(Path::new("b")).is_err());
    }
}
