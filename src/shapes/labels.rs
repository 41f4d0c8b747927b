//! The label of one shapes-world image: every attribute the renderer needs, so an image is a pure
//! function of its label, and the words the captions use for each attribute.
use serde::{Deserialize, Serialize};

/// Image side in pixels (square RGB images).
pub const IMAGE_SIZE: u32 = 32;

macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The caption word(s) for this value.
            pub fn word(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }

            /// Parse a caption word (as written by [`Self::word`]).
            pub fn from_word(w: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.word() == w.trim())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.word())
            }
        }
    };
}

word_enum!(
    /// Foreground colours (the judged attribute).
    Color { Red => "red", Green => "green", Blue => "blue", Yellow => "yellow", Purple => "purple", Orange => "orange" }
);
word_enum!(
    /// Shapes (the judged attribute).
    Shape { Circle => "circle", Square => "square", Triangle => "triangle", Cross => "cross" }
);
word_enum!(
    /// Size classes; the exact size is `ShapeLabel::radius`.
    Size { Small => "small", Large => "large" }
);
word_enum!(
    /// Cells of a 3×3 grid; the exact centre is `ShapeLabel::cx/cy`.
    Position {
        TopLeft => "top left", Top => "top", TopRight => "top right",
        Left => "left", Center => "center", Right => "right",
        BottomLeft => "bottom left", Bottom => "bottom", BottomRight => "bottom right",
    }
);
word_enum!(
    /// Flat background colours.
    Background { White => "white", Black => "black", Gray => "gray" }
);

impl Color {
    /// sRGB value; the palette is spread so nearest-colour classification has wide margins.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [220, 40, 40],
            Color::Green => [40, 170, 60],
            Color::Blue => [40, 80, 220],
            Color::Yellow => [240, 210, 40],
            Color::Purple => [150, 60, 190],
            Color::Orange => [250, 140, 30],
        }
    }
}

impl Background {
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Background::White => [255, 255, 255],
            Background::Black => [0, 0, 0],
            Background::Gray => [128, 128, 128],
        }
    }
}

impl Size {
    /// Range of `radius` (pixels, half the shape's extent) for this class.
    pub fn radius_range(self) -> (f32, f32) {
        match self {
            Size::Small => (5.0, 6.0),
            Size::Large => (7.5, 9.0),
        }
    }

    /// The class of a measured radius (midway between the ranges).
    pub fn of_radius(r: f32) -> Self {
        if r < 6.75 {
            Size::Small
        } else {
            Size::Large
        }
    }
}

/// Grid-cell centres along one axis (pixels); the largest shape still fits inside the image.
pub const GRID_CENTRES: [f32; 3] = [10.25, 16.0, 21.75];
/// Largest offset of a shape's centre from its cell centre.
pub const CENTRE_JITTER: f32 = 0.75;

impl Position {
    /// (column, row) in the 3×3 grid.
    pub fn cell(self) -> (usize, usize) {
        let i = Position::ALL.iter().position(|p| *p == self).unwrap_or(4);
        (i % 3, i / 3)
    }

    pub fn from_cell(col: usize, row: usize) -> Self {
        Position::ALL[(row.min(2)) * 3 + col.min(2)]
    }

    /// The cell a measured centre falls into (nearest grid centre on each axis).
    pub fn of_centre(cx: f32, cy: f32) -> Self {
        let nearest = |v: f32| {
            (0..3)
                .min_by(|&a, &b| {
                    (GRID_CENTRES[a] - v)
                        .abs()
                        .total_cmp(&(GRID_CENTRES[b] - v).abs())
                })
                .unwrap_or(1)
        };
        Self::from_cell(nearest(cx), nearest(cy))
    }

    /// The caption phrase ("in the top left", "at the top", "in the center", ...).
    pub fn phrase(self) -> String {
        match self {
            Position::Top | Position::Bottom => format!("at the {}", self.word()),
            Position::Left | Position::Right => format!("on the {}", self.word()),
            _ => format!("in the {}", self.word()),
        }
    }
}

/// Everything that determines an image. `cx`, `cy` (pixel coordinates of the shape's centre, origin
/// at the top-left corner of the image) and `radius` are exact; the classes are what captions say.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShapeLabel {
    pub color: Color,
    pub shape: Shape,
    pub size: Size,
    pub position: Position,
    pub background: Background,
    pub cx: f32,
    pub cy: f32,
    pub radius: f32,
}

impl ShapeLabel {
    /// Check that the exact geometry agrees with the classes and fits in the image.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let (lo, hi) = self.size.radius_range();
        if !(lo..=hi).contains(&self.radius) {
            return Err(format!(
                "radius {} is outside the {} range {lo}..={hi}",
                self.radius, self.size
            ));
        }
        let (col, row) = self.position.cell();
        for (v, cell, axis) in [(self.cx, col, "cx"), (self.cy, row, "cy")] {
            if (v - GRID_CENTRES[cell]).abs() > CENTRE_JITTER + 1e-4 {
                return Err(format!(
                    "{axis} = {v} is not within {CENTRE_JITTER} px of the {} cell centre {}",
                    self.position, GRID_CENTRES[cell]
                ));
            }
        }
        Ok(())
    }
}
