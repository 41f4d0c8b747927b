//! Side-by-side image grids for reports: rows of images, each cell scaled up by an integer factor
//! with nearest-neighbour sampling (small images stay crisp), separated by white lines.
use image::{imageops, Rgb, RgbImage};

/// A grid of `rows` (each a list of cells; `None` leaves a gray cell), every cell `cell` × `cell`
/// pixels, with a `gap`-pixel white border between cells.
pub fn image_grid(rows: &[Vec<Option<&RgbImage>>], cell: u32, gap: u32) -> RgbImage {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let nrows = rows.len() as u32;
    let mut out = RgbImage::from_pixel(
        gap + ncols * (cell + gap),
        gap + nrows * (cell + gap),
        Rgb([255, 255, 255]),
    );
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let tile = match img {
                Some(img) => imageops::resize(*img, cell, cell, imageops::FilterType::Nearest),
                None => RgbImage::from_pixel(cell, cell, Rgb([200, 200, 200])),
            };
            let (x, y) = (gap + c as u32 * (cell + gap), gap + r as u32 * (cell + gap));
            imageops::replace(&mut out, &tile, x as i64, y as i64);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_land_where_they_belong() {
        let red = RgbImage::from_pixel(4, 4, Rgb([255, 0, 0]));
        let g = image_grid(&[vec![Some(&red), None]], 8, 2);
        assert_eq!(g.dimensions(), (2 + 2 * 10, 2 + 10));
        assert_eq!(g.get_pixel(2, 2), &Rgb([255, 0, 0]));
        assert_eq!(g.get_pixel(9, 9), &Rgb([255, 0, 0]));
        assert_eq!(g.get_pixel(12, 2), &Rgb([200, 200, 200]));
        assert_eq!(g.get_pixel(0, 0), &Rgb([255, 255, 255]));
    }
}
