//! plotters' bitmap backend with its own text rasteriser.

use ab_glyph::{Font, FontRef, ScaleFont};
use plotters::prelude::{BitMapBackend, DrawingBackend};
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

use super::{Msg, OrMsg, FONT};

/// plotters' bitmap backend with its own text rasteriser. plotters' ab_glyph text drops each
/// glyph's left side bearing (uneven letter spacing) and sets text high; this draws glyphs at
/// their proper pen positions, with sub-pixel placement, the text box plotters laid out, and
/// capitals centred vertically in it.
pub(super) struct PngBackend<'a> {
    inner: BitMapBackend<'a>,
    font: FontRef<'static>,
}

impl<'a> PngBackend<'a> {
    pub(super) fn new(rgb: &'a mut [u8], size: (u32, u32)) -> Msg<Self> {
        let font = FontRef::try_from_slice(FONT).or_msg()?;
        Ok(PngBackend {
            inner: BitMapBackend::with_buffer(rgb, size),
            font,
        })
    }
}

type BackendResult<E> = std::result::Result<(), DrawingErrorKind<E>>;

impl DrawingBackend for PngBackend<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> BackendResult<Self::ErrorType> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> BackendResult<Self::ErrorType> {
        self.inner.present()
    }

    fn draw_pixel(&mut self, p: BackendCoord, c: BackendColor) -> BackendResult<Self::ErrorType> {
        self.inner.draw_pixel(p, c)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> BackendResult<Self::ErrorType> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> BackendResult<Self::ErrorType> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> BackendResult<Self::ErrorType> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> BackendResult<Self::ErrorType> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> BackendResult<Self::ErrorType> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> BackendResult<Self::ErrorType> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> BackendResult<Self::ErrorType> {
        let colour = style.color();
        if colour.alpha == 0.0 || text.is_empty() {
            return Ok(());
        }
        // The box plotters used to place the text (and that estimate_text_size reports).
        let ((x0, y0), (x1, y1)) = style
            .layout_box(text)
            .map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (bw, bh) = (x1 - x0, y1 - y0);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -bw,
            HPos::Center => -bw / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -bh / 2,
            VPos::Bottom => -bh,
        };
        let font = self.font.as_scaled(style.size() as f32);
        let cap = font
            .outline_glyph(font.scaled_glyph('H'))
            .map_or(font.ascent() * 0.75, |g| -g.px_bounds().min.y);
        let baseline = (bh as f32 + cap) / 2.0;
        let mut coverage: Vec<(i32, i32, f32)> = Vec::new();
        let mut caret = 0f32;
        let mut prev = None;
        for ch in text.chars() {
            let id = font.glyph_id(ch);
            if let Some(p) = prev {
                caret += font.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(font.scale(), ab_glyph::point(caret, baseline));
            caret += font.h_advance(id);
            if let Some(outline) = font.outline_glyph(glyph) {
                let b = outline.px_bounds();
                let (gx, gy) = (b.min.x as i32, b.min.y as i32);
                outline.draw(|x, y, c| coverage.push((gx + x as i32, gy + y as i32, c)));
            }
        }
        let transform = style.transform();
        let (w, h) = self.inner.get_size();
        for (x, y, c) in coverage {
            if c <= 0.0 {
                continue;
            }
            let (tx, ty) = transform.transform(x + dx, y + dy);
            let (px, py) = (pos.0 + tx, pos.1 + ty);
            if px >= 0 && py >= 0 && (px as u32) < w && (py as u32) < h {
                let alpha = colour.alpha * f64::from(c.min(1.0));
                self.inner.draw_pixel(
                    (px, py),
                    BackendColor {
                        alpha,
                        rgb: colour.rgb,
                    },
                )?;
            }
        }
        Ok(())
    }
}
