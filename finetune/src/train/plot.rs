//! Pictures as PNG: the loss curve (loss.png beside loss.csv: raw loss in grey, a moving
//! average in blue, on a linear scale from 0 to the largest loss) and grouped bars (a fit
//! report's rank histogram). Axes only, no text: the CSV or the report carries the numbers.

use std::path::Path;

use anyhow::Result;

const WIDTH: usize = 800;
const HEIGHT: usize = 400;
const MARGIN: usize = 20;

/// Draws `losses` (one per step; or any curve, e.g. validation HR@1 per epoch) to `path`.
pub fn loss_png(losses: &[f64], path: &Path) -> Result<()> {
    let mut pixels = vec![255u8; WIDTH * HEIGHT * 3];
    let mut put = |x: usize, y: usize, rgb: [u8; 3]| {
        if x < WIDTH && y < HEIGHT {
            let i = (y * WIDTH + x) * 3;
            pixels[i..i + 3].copy_from_slice(&rgb);
        }
    };
    for x in MARGIN..WIDTH - MARGIN {
        put(x, HEIGHT - MARGIN, [0, 0, 0]);
    }
    for y in MARGIN..HEIGHT - MARGIN {
        put(MARGIN, y, [0, 0, 0]);
    }
    let finite: Vec<f64> = losses.iter().copied().filter(|l| l.is_finite()).collect();
    let max = finite.iter().copied().fold(0.0, f64::max);
    if finite.len() >= 2 && max > 0.0 {
        let (w, h) = ((WIDTH - 2 * MARGIN) as f64, (HEIGHT - 2 * MARGIN) as f64);
        let point = |i: usize, loss: f64| {
            let x = MARGIN as f64 + w * i as f64 / (finite.len() - 1) as f64;
            let y = (HEIGHT - MARGIN) as f64 - h * (loss / max);
            (x as usize, y.max(0.0) as usize)
        };
        let window = (finite.len() / 50).max(1);
        let mut smoothed = Vec::with_capacity(finite.len());
        let mut sum = 0.0;
        for (i, l) in finite.iter().enumerate() {
            sum += l;
            if i >= window {
                sum -= finite[i - window];
            }
            smoothed.push(sum / (i + 1).min(window) as f64);
        }
        for (series, colour) in [(&finite, [170, 170, 170]), (&smoothed, [20, 60, 200])] {
            for i in 1..series.len() {
                let (x0, y0) = point(i - 1, series[i - 1]);
                let (x1, y1) = point(i, series[i]);
                let steps = x1.abs_diff(x0).max(y1.abs_diff(y0)).max(1);
                for s in 0..=steps {
                    let t = s as f64 / steps as f64;
                    let x = x0 as f64 + (x1 as f64 - x0 as f64) * t;
                    let y = y0 as f64 + (y1 as f64 - y0 as f64) * t;
                    put(x.round() as usize, y.round() as usize, colour);
                }
            }
        }
    }
    write_png(&pixels, path)
}

/// Colours of the series of a bar chart, in order.
pub const SERIES_COLOURS: [[u8; 3]; 4] = [
    [170, 170, 170],
    [230, 140, 30],
    [20, 60, 200],
    [40, 160, 60],
];

/// A grouped bar chart to `path`: group `g` (e.g. the positive's rank) holds one bar per
/// series (e.g. per method), `series[s][g]`, coloured by [`SERIES_COLOURS`], from 0 to the
/// largest value. Axes only, no text: the report's table carries the numbers.
pub fn bars_png(series: &[Vec<f64>], path: &Path) -> Result<()> {
    let mut pixels = vec![255u8; WIDTH * HEIGHT * 3];
    let mut fill = |x0: usize, x1: usize, y0: usize, y1: usize, rgb: [u8; 3]| {
        for y in y0..y1.min(HEIGHT) {
            for x in x0..x1.min(WIDTH) {
                let i = (y * WIDTH + x) * 3;
                pixels[i..i + 3].copy_from_slice(&rgb);
            }
        }
    };
    fill(
        MARGIN,
        WIDTH - MARGIN,
        HEIGHT - MARGIN,
        HEIGHT - MARGIN + 1,
        [0, 0, 0],
    );
    fill(MARGIN, MARGIN + 1, MARGIN, HEIGHT - MARGIN, [0, 0, 0]);
    let groups = series.iter().map(Vec::len).max().unwrap_or(0);
    let max = series.iter().flatten().copied().fold(0.0, f64::max);
    if groups > 0 && max > 0.0 && !series.is_empty() {
        let group_width = (WIDTH - 2 * MARGIN - 1) / groups;
        let bar_width = (group_width * 4 / 5 / series.len()).max(1);
        let height = (HEIGHT - 2 * MARGIN) as f64;
        for (s, values) in series.iter().enumerate() {
            for (g, &value) in values.iter().enumerate() {
                let x0 = MARGIN + 1 + g * group_width + group_width / 10 + s * bar_width;
                let top = HEIGHT - MARGIN - (height * (value / max).clamp(0.0, 1.0)) as usize;
                let colour = SERIES_COLOURS[s % SERIES_COLOURS.len()];
                fill(x0, x0 + bar_width, top, HEIGHT - MARGIN, colour);
            }
        }
    }
    write_png(&pixels, path)
}

fn write_png(pixels: &[u8], path: &Path) -> Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, WIDTH as u32, HEIGHT as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(pixels)?;
    Ok(())
}
