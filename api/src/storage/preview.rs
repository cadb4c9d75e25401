//! `getFilePreview`: an image file resized, cropped to a gravity, bordered, rounded, faded,
//! rotated, laid on a background and encoded as jpg, png, webp, gif or avif, as Appwrite's
//! parameters ask. Decoding is bounded (dimensions and allocation: a decompression bomb is
//! refused with `storage_image_resolution_exceeded`, never allocated), runs off the async
//! runtime, a few at a time, and results are cached per file version and parameter set (in
//! memory, bounded by bytes). Files that are not images Basalt can decode, or larger than
//! `PREVIEW_LIMIT`, get a flat placeholder, as Appwrite answers with an icon.

use super::{bucket, readable_file, FILES_READ};
use crate::common::{enter_scoped, Reply};
use crate::error::ApiError;
use crate::params::Req;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use model::msg;
use model::storage::File;
use model::ErrorCode;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Files larger than this are not decoded for a preview (Appwrite's default limit).
pub(crate) const PREVIEW_LIMIT: u64 = 20_000_000;
/// The largest image dimensions decoded, and the most memory one decode may allocate.
const MAX_SIDE: u32 = 12_000;
const MAX_ALLOC: u64 = 256 << 20;
/// Bytes of previews the cache keeps, and the largest one it keeps.
const CACHE_BYTES: usize = 64 << 20;
const CACHE_ONE_MAX: usize = 4 << 20;
/// The placeholder's colour (Appwrite's icons' background).
const PLACEHOLDER: [u8; 3] = [0xec, 0xef, 0xf1];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gravity {
    Center,
    TopLeft,
    Top,
    TopRight,
    Left,
    Right,
    BottomLeft,
    Bottom,
    BottomRight,
}

impl Gravity {
    fn parse(s: &str) -> Option<Gravity> {
        Some(match s {
            "center" => Gravity::Center,
            "top-left" => Gravity::TopLeft,
            "top" => Gravity::Top,
            "top-right" => Gravity::TopRight,
            "left" => Gravity::Left,
            "right" => Gravity::Right,
            "bottom-left" => Gravity::BottomLeft,
            "bottom" => Gravity::Bottom,
            "bottom-right" => Gravity::BottomRight,
            _ => return None,
        })
    }

    /// Where a span of `inner` sits in `outer` along x (`horizontal`) or y.
    fn offset(self, outer: u32, inner: u32, horizontal: bool) -> u32 {
        use Gravity::*;
        let room = outer.saturating_sub(inner);
        let start = matches!(
            (self, horizontal),
            (TopLeft | Left | BottomLeft, true) | (TopLeft | Top | TopRight, false)
        );
        let end = matches!(
            (self, horizontal),
            (TopRight | Right | BottomRight, true) | (BottomLeft | Bottom | BottomRight, false)
        );
        match (start, end) {
            (true, _) => 0,
            (_, true) => room,
            _ => room / 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Jpg,
    Png,
    Webp,
    Gif,
    Avif,
}

impl Output {
    fn parse(s: &str) -> Result<Option<Output>, ApiError> {
        Ok(Some(match s {
            "" => return Ok(None),
            "jpg" | "jpeg" => Output::Jpg,
            "png" => Output::Png,
            "webp" => Output::Webp,
            "gif" => Output::Gif,
            "avif" => Output::Avif,
            "heic" => {
                return Err(ApiError::new(
                    ErrorCode::StorageFileTypeUnsupported,
                    "Output format heic is not supported by this server: use jpg, png, webp, gif or avif.",
                ))
            }
            _ => {
                return Err(invalid(
                    "Invalid `output` param: Value must be one of (jpg, jpeg, png, gif, webp, heic, avif)",
                ))
            }
        }))
    }

    fn mime(self) -> &'static str {
        match self {
            Output::Jpg => "image/jpeg",
            Output::Png => "image/png",
            Output::Webp => "image/webp",
            Output::Gif => "image/gif",
            Output::Avif => "image/avif",
        }
    }

    fn has_alpha(self) -> bool {
        !matches!(self, Output::Jpg)
    }
}

/// What a preview asks for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Params {
    pub width: u32,
    pub height: u32,
    pub gravity: Gravity,
    pub quality: i32,
    pub border_width: u32,
    pub border_color: Option<[u8; 3]>,
    pub border_radius: u32,
    pub opacity: f32,
    pub rotation: i32,
    pub background: Option<[u8; 3]>,
    pub output: Option<Output>,
}

fn invalid(m: impl Into<model::error::Message>) -> ApiError {
    ApiError(model::Error::invalid(m))
}

fn hex_color(req: &Req, name: &str) -> Result<Option<[u8; 3]>, ApiError> {
    let Some(v) = req.str_opt(name)?.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = || {
        invalid(msg!(
            "Invalid `{}` param: Value must be a valid hex color code",
            name
        ))
    };
    let v = v.trim_start_matches('#');
    let full = match v.len() {
        3 => v.chars().flat_map(|c| [c, c]).collect::<String>(),
        6 => v.to_string(),
        _ => return Err(bad()),
    };
    let n = u32::from_str_radix(&full, 16).map_err(|_| bad())?;
    Ok(Some([(n >> 16) as u8, (n >> 8) as u8, n as u8]))
}

fn int_in(req: &Req, name: &str, lo: i64, hi: i64, default: i64) -> Result<i64, ApiError> {
    let v = match req.number_opt(name)? {
        None => default,
        Some(model::Value::Int(i)) => i,
        Some(model::Value::Float(f)) if f.fract() == 0.0 => f as i64,
        Some(_) => lo - 1,
    };
    match (lo..=hi).contains(&v) {
        true => Ok(v),
        false => Err(invalid(msg!(
            "Invalid `{}` param: Value must be a valid range between {} and {}",
            name,
            lo,
            hi
        ))),
    }
}

impl Params {
    pub(crate) fn parse(req: &Req) -> Result<Params, ApiError> {
        let opacity = match req.number_opt("opacity")? {
            None => 1.0,
            Some(v) => v.as_f64().unwrap_or(-1.0),
        };
        if !(0.0..=1.0).contains(&opacity) {
            return Err(invalid(
                "Invalid `opacity` param: Value must be a valid range between 0 and 1",
            ));
        }
        Ok(Params {
            width: int_in(req, "width", 0, 4000, 0)? as u32,
            height: int_in(req, "height", 0, 4000, 0)? as u32,
            gravity: match req.str_opt("gravity")? {
                None => Gravity::Center,
                Some(g) => Gravity::parse(&g).ok_or_else(|| invalid("Invalid `gravity` param: Value must be one of (center, top-left, top, top-right, left, right, bottom-left, bottom, bottom-right)"))?,
            },
            quality: int_in(req, "quality", -1, 100, -1)? as i32,
            border_width: int_in(req, "borderWidth", 0, 100, 0)? as u32,
            border_color: hex_color(req, "borderColor")?,
            border_radius: int_in(req, "borderRadius", 0, 4000, 0)? as u32,
            opacity: opacity as f32,
            rotation: int_in(req, "rotation", -360, 360, 0)? as i32,
            background: hex_color(req, "background")?,
            output: Output::parse(&req.str_opt("output")?.unwrap_or_default())?,
        })
    }

    fn cache_key(&self) -> String {
        format!("{self:?}")
    }
}

/// Why a preview could not be made.
#[derive(Debug)]
pub(crate) enum PreviewError {
    TooLarge(String),
    Undecodable(String),
    Encode(String),
}

/// The output a file gets when the request names none: its own extension's, when that is an
/// output format, else jpg (as Appwrite).
fn default_output(name: &str) -> Output {
    match model::storage::extension(name).as_str() {
        "png" => Output::Png,
        "webp" => Output::Webp,
        "gif" => Output::Gif,
        "avif" => Output::Avif,
        _ => Output::Jpg,
    }
}

/// Decodes `input` within the limits.
fn decode(input: &[u8]) -> Result<DynamicImage, PreviewError> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(input))
        .with_guessed_format()
        .map_err(|e| PreviewError::Undecodable(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => PreviewError::TooLarge(l.to_string()),
        e => PreviewError::Undecodable(e.to_string()),
    })
}

/// Scales to cover `w`×`h` (either may be 0: keep the aspect ratio) and crops at `gravity`.
/// The largest side a preview is worked on at (what `width` and `height` may ask for): an
/// image asked for whole is scaled down to it first, so the effects after work on at most
/// 4000 x 4000 pixels.
const MAX_OUT: u32 = 4000;

/// Scales to cover `w`x`h` (either may be 0: keep the aspect ratio; both: the whole image,
/// within `MAX_OUT`) and crops at `gravity`. The crop is taken from the source first, then
/// only that region is scaled: nothing larger than the source or the output is ever made,
/// whatever the aspect ratio.
fn fit(img: DynamicImage, w: u32, h: u32, gravity: Gravity) -> DynamicImage {
    use image::imageops::FilterType::Triangle;
    let (iw, ih) = (img.width().max(1) as u64, img.height().max(1) as u64);
    let side = |n: u64| n.clamp(1, MAX_OUT as u64) as u32;
    let (w, h) = match (w, h) {
        (0, 0) if iw <= MAX_OUT as u64 && ih <= MAX_OUT as u64 => return img,
        (0, 0) => return img.resize(MAX_OUT, MAX_OUT, Triangle),
        (w, 0) => (w, side(ih * w as u64 / iw)),
        (0, h) => (side(iw * h as u64 / ih), h),
        (w, h) => (w, h),
    };
    let scale = (w as f64 / iw as f64).max(h as f64 / ih as f64);
    let cw = ((w as f64 / scale).ceil() as u64).clamp(1, iw) as u32;
    let ch = ((h as f64 / scale).ceil() as u64).clamp(1, ih) as u32;
    let x = gravity.offset(iw as u32, cw, true);
    let y = gravity.offset(ih as u32, ch, false);
    img.crop_imm(x, y, cw, ch).resize_exact(w, h, Triangle)
}

fn bordered(img: RgbaImage, width: u32, color: [u8; 3]) -> RgbaImage {
    if width == 0 {
        return img;
    }
    let (w, h) = img.dimensions();
    let mut out = RgbaImage::from_pixel(
        w + 2 * width,
        h + 2 * width,
        Rgba([color[0], color[1], color[2], 255]),
    );
    image::imageops::overlay(&mut out, &img, width as i64, width as i64);
    out
}

fn rounded(mut img: RgbaImage, radius: u32) -> RgbaImage {
    let (w, h) = img.dimensions();
    let r = radius.min(w / 2).min(h / 2) as f32;
    if r < 1.0 {
        return img;
    }
    for y in 0..h {
        for x in 0..w {
            let cx = if (x as f32) < r {
                r
            } else if (x as f32) >= w as f32 - r {
                w as f32 - r
            } else {
                continue;
            };
            let cy = if (y as f32) < r {
                r
            } else if (y as f32) >= h as f32 - r {
                h as f32 - r
            } else {
                continue;
            };
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            if dx * dx + dy * dy > r * r {
                img.get_pixel_mut(x, y).0[3] = 0;
            }
        }
    }
    img
}

/// Rotates by `degrees` (clockwise) onto a canvas that holds the whole image, transparent
/// outside it; bilinear sampling.
fn rotated(img: RgbaImage, degrees: i32) -> RgbaImage {
    match degrees.rem_euclid(360) {
        0 => return img,
        90 => return image::imageops::rotate90(&img),
        180 => return image::imageops::rotate180(&img),
        270 => return image::imageops::rotate270(&img),
        _ => {}
    }
    let t = (degrees as f64).to_radians();
    let (sin, cos) = t.sin_cos();
    let (w, h) = (img.width() as f64, img.height() as f64);
    let nw = (w * cos.abs() + h * sin.abs()).ceil().max(1.0);
    let nh = (w * sin.abs() + h * cos.abs()).ceil().max(1.0);
    let mut out = RgbaImage::new(nw as u32, nh as u32);
    let (cx, cy, ncx, ncy) = (w / 2.0, h / 2.0, nw / 2.0, nh / 2.0);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let (dx, dy) = (x as f64 + 0.5 - ncx, y as f64 + 0.5 - ncy);
        // The inverse rotation: where this output pixel comes from.
        let sx = dx * cos + dy * sin + cx - 0.5;
        let sy = -dx * sin + dy * cos + cy - 0.5;
        if sx < -0.5 || sy < -0.5 || sx > w - 0.5 || sy > h - 0.5 {
            continue;
        }
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let sample = |x: f64, y: f64| -> [f64; 4] {
            let x = x.clamp(0.0, w - 1.0) as u32;
            let y = y.clamp(0.0, h - 1.0) as u32;
            img.get_pixel(x, y).0.map(f64::from)
        };
        let (a, b, c, d) = (
            sample(x0, y0),
            sample(x0 + 1.0, y0),
            sample(x0, y0 + 1.0),
            sample(x0 + 1.0, y0 + 1.0),
        );
        let mut v = [0u8; 4];
        for i in 0..4 {
            let top = a[i] * (1.0 - fx) + b[i] * fx;
            let bottom = c[i] * (1.0 - fx) + d[i] * fx;
            v[i] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
        }
        *px = Rgba(v);
    }
    out
}

fn flatten(img: &mut RgbaImage, color: [u8; 3]) {
    for px in img.pixels_mut() {
        let a = px.0[3] as u32;
        for (channel, c) in px.0.iter_mut().zip(color) {
            *channel = ((*channel as u32 * a + c as u32 * (255 - a)) / 255) as u8;
        }
        px.0[3] = 255;
    }
}

fn encode(img: RgbaImage, output: Output, quality: i32) -> Result<Vec<u8>, PreviewError> {
    let mut out = std::io::Cursor::new(Vec::new());
    let err = |e: image::ImageError| PreviewError::Encode(e.to_string());
    match output {
        Output::Jpg => {
            let rgb = DynamicImage::ImageRgba8(img).to_rgb8();
            let q = if quality < 0 {
                90
            } else {
                quality.clamp(1, 100) as u8
            };
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
                .encode_image(&rgb)
                .map_err(err)?;
        }
        Output::Avif => {
            let q = if quality < 0 {
                80
            } else {
                quality.clamp(1, 100) as u8
            };
            image::codecs::avif::AvifEncoder::new_with_speed_quality(&mut out, 10, q)
                .write_image(
                    img.as_raw(),
                    img.width(),
                    img.height(),
                    image::ExtendedColorType::Rgba8,
                )
                .map_err(err)?;
        }
        Output::Png => img.write_to(&mut out, ImageFormat::Png).map_err(err)?,
        Output::Webp => img.write_to(&mut out, ImageFormat::WebP).map_err(err)?,
        // The fastest colour quantisation: the slowest takes minutes on a large image.
        Output::Gif => image::codecs::gif::GifEncoder::new_with_speed(&mut out, 30)
            .encode_frame(image::Frame::new(img))
            .map_err(err)?,
    }
    Ok(out.into_inner())
}

use image::ImageEncoder;

/// A preview of `input` (`None`: a placeholder) as `p` asks; the original file name decides
/// the default output. Answers the bytes and their type.
pub(crate) fn render(
    input: Option<&[u8]>,
    name: &str,
    p: &Params,
) -> Result<(Vec<u8>, &'static str), PreviewError> {
    let output = p.output.unwrap_or_else(|| default_output(name));
    let img = match input {
        Some(bytes) => fit(decode(bytes)?, p.width, p.height, p.gravity),
        None => {
            let (w, h) = match (p.width, p.height) {
                (0, 0) => (150, 150),
                (0, h) => (h, h),
                (w, 0) => (w, w),
                (w, h) => (w, h),
            };
            let c = p.background.unwrap_or(PLACEHOLDER);
            DynamicImage::ImageRgba8(RgbaImage::from_pixel(w, h, Rgba([c[0], c[1], c[2], 255])))
        }
    };
    let mut img = bordered(
        img.into_rgba8(),
        p.border_width,
        p.border_color.unwrap_or([0, 0, 0]),
    );
    img = rounded(img, p.border_radius);
    if p.opacity < 1.0 {
        for px in img.pixels_mut() {
            px.0[3] = (px.0[3] as f32 * p.opacity).round() as u8;
        }
    }
    img = rotated(img, p.rotation);
    match (p.background, output.has_alpha()) {
        (Some(bg), _) => flatten(&mut img, bg),
        (None, false) => flatten(&mut img, [255, 255, 255]),
        (None, true) => {}
    }
    Ok((encode(img, output, p.quality)?, output.mime()))
}

/// Previews made recently, by file version and parameters; bounded by bytes, oldest out.
/// A preview's bytes and their type.
type Made = (bytes::Bytes, &'static str);

#[derive(Default)]
pub(crate) struct Cache {
    /// The previews by key, their keys oldest first, and their bytes in all.
    inner: Mutex<(HashMap<String, Made>, VecDeque<String>, usize)>,
}

impl Cache {
    fn get(&self, key: &str) -> Option<Made> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(key)
            .cloned()
    }

    fn put(&self, key: String, value: Made) {
        if value.0.len() > CACHE_ONE_MAX {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order, bytes) = &mut *g;
        *bytes += value.0.len();
        if let Some(old) = map.insert(key.clone(), value) {
            *bytes -= old.0.len();
        } else {
            order.push_back(key);
        }
        while *bytes > CACHE_BYTES {
            let Some(k) = order.pop_front() else { break };
            if let Some(v) = map.remove(&k) {
                *bytes -= v.0.len();
            }
        }
    }
}

/// Mime types decoded for previews.
fn decodable(mime: &str) -> bool {
    matches!(
        mime,
        "image/jpeg" | "image/jpg" | "image/png" | "image/gif" | "image/webp"
    )
}

/// A whole file's plain bytes (for previews, which are bounded by `PREVIEW_LIMIT`).
async fn read_all(s: &AppState, ctx: &crate::auth::Ctx, f: &File) -> Result<Vec<u8>, ApiError> {
    let chunks = super::download::chunks_of(&*ctx.view, &ctx.project, f, 0, f.size_original - 1)?;
    let key = super::download::file_key(ctx, f, &chunks)?;
    let mut out = Vec::with_capacity(f.size_original as usize);
    for (index, chunk) in chunks {
        let plain = super::download::plain_chunk(s, f, index, chunk, key.clone())
            .await
            .map_err(|_| ApiError::new(ErrorCode::GeneralServerError, "Server Error"))?;
        out.extend_from_slice(&plain);
    }
    Ok(out)
}

pub(super) async fn preview(State(s): State<AppState>, req: Req) -> Reply {
    let ctx = enter_scoped(&s, &req, FILES_READ).await?;
    let b = bucket(&ctx, &req.path("bucket"))?;
    let shared = super::tokens::grants(&ctx, &req, &b.id, &req.path("file"))?;
    let (_, f) = readable_file(&ctx, &b, &req.path("file"), shared)?;
    if !b.transformations && !ctx.is_key() {
        return Err(ApiError::new(
            ErrorCode::StorageBucketTransformationsDisabled,
            "Image transformations are disabled for the requested bucket.",
        ));
    }
    if !f.complete() {
        return Err(super::file_not_found());
    }
    let p = Params::parse(&req)?;
    let key = format!(
        "{}/{}/{}/{}/{}/{}",
        ctx.project,
        f.bucket,
        f.id,
        f.signature,
        f.updated_at,
        p.cache_key()
    );
    let (bytes, mime, hit) = match s.previews.cache.get(&key) {
        Some((b, m)) => (b, m, true),
        None => {
            // A turn first (one per core), held until the render ends, even if this request
            // gives up: a file is read and decoded only with a turn.
            let turn = s
                .previews
                .turns
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ApiError::new(ErrorCode::GeneralServerError, "Server Error"))?;
            let input = match decodable(&f.mime_type) && f.size_original <= PREVIEW_LIMIT {
                true => Some(read_all(&s, &ctx, &f).await?),
                false => None,
            };
            let (name, params) = (f.name.clone(), p.clone());
            let made = tokio::task::spawn_blocking(move || {
                let made = render(input.as_deref(), &name, &params);
                drop(turn);
                made
            })
            .await
            .map_err(|_| ApiError::new(ErrorCode::GeneralServerError, "Server Error"))?;
            let (bytes, mime) = made.map_err(|e| match e {
                PreviewError::TooLarge(m) => ApiError::new(
                    ErrorCode::StorageImageResolutionExceeded,
                    msg!(
                        "The image resolution exceeds the maximum allowed for processing: {}",
                        m
                    ),
                ),
                PreviewError::Undecodable(m) => ApiError::new(
                    ErrorCode::StorageFileTypeUnsupported,
                    msg!("The image could not be decoded: {}", m),
                ),
                PreviewError::Encode(m) => {
                    tracing::error!(error = %m, "encoding a preview");
                    ApiError::new(ErrorCode::GeneralServerError, "Server Error")
                }
            })?;
            let bytes = bytes::Bytes::from(bytes);
            s.previews.cache.put(key, (bytes.clone(), mime));
            (bytes, mime, false)
        }
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=2592000"),
            ),
            (
                header::HeaderName::from_static("x-appwrite-cache"),
                HeaderValue::from_static(if hit { "hit" } else { "miss" }),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// The previews' cache and how many are made at once (one per core).
pub(crate) struct Previews {
    cache: Cache,
    turns: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Previews {
    pub(crate) fn new(cores: usize) -> Previews {
        Previews {
            cache: Cache::default(),
            turns: std::sync::Arc::new(tokio::sync::Semaphore::new(cores.max(1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::GenericImageView;

    fn params() -> Params {
        Params {
            width: 0,
            height: 0,
            gravity: Gravity::Center,
            quality: -1,
            border_width: 0,
            border_color: None,
            border_radius: 0,
            opacity: 1.0,
            rotation: 0,
            background: None,
            output: None,
        }
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbaImage::from_fn(w, h, |x, y| {
            Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// The dimensions of `src` previewed as `p` asks.
    fn dims(src: &[u8], p: Params) -> (u32, u32) {
        let (out, _) = render(Some(src), "a.png", &p).unwrap();
        image::load_from_memory(&out).unwrap().dimensions()
    }

    #[test]
    fn previews_fit_crop_and_encode() {
        let src = png(400, 200);
        let (out, mime) = render(
            Some(&src),
            "a.png",
            &Params {
                width: 100,
                height: 100,
                ..params()
            },
        )
        .unwrap();
        assert_eq!(mime, "image/png");
        assert_eq!(
            image::load_from_memory(&out).unwrap().dimensions(),
            (100, 100)
        );
        let jpg = Params {
            width: 100,
            output: Some(Output::Jpg),
            ..params()
        };
        assert_eq!(render(Some(&src), "a.png", &jpg).unwrap().1, "image/jpeg");
        assert_eq!(dims(&src, jpg), (100, 50));
        let webp = Params {
            width: 50,
            border_width: 5,
            output: Some(Output::Webp),
            ..params()
        };
        assert_eq!(dims(&src, webp), (60, 35));
        assert_eq!(
            dims(
                &src,
                Params {
                    rotation: 90,
                    ..params()
                }
            ),
            (200, 400)
        );
        let (w, h) = dims(
            &src,
            Params {
                rotation: 45,
                border_radius: 20,
                opacity: 0.5,
                ..params()
            },
        );
        assert!(
            (423..=426).contains(&w) && (423..=426).contains(&h),
            "{w}x{h}"
        );
    }

    #[test]
    fn extreme_aspect_ratios_stay_small() {
        let (tall, wide) = (png(1, 3000), png(3000, 1));
        assert_eq!(
            dims(
                &tall,
                Params {
                    width: 4000,
                    height: 4000,
                    ..params()
                }
            ),
            (4000, 4000)
        );
        assert_eq!(
            dims(
                &tall,
                Params {
                    height: 4000,
                    ..params()
                }
            ),
            (1, 4000)
        );
        assert_eq!(
            dims(
                &wide,
                Params {
                    height: 4000,
                    ..params()
                }
            ),
            (4000, 4000)
        );
        assert_eq!(dims(&png(4500, 10), params()).0, 4000);
    }

    #[test]
    fn gravity_picks_the_crop() {
        assert_eq!(Gravity::TopLeft.offset(300, 100, true), 0);
        assert_eq!(Gravity::Center.offset(300, 100, true), 100);
        assert_eq!(Gravity::BottomRight.offset(300, 100, false), 200);
        assert_eq!(Gravity::Top.offset(300, 100, false), 0);
        assert_eq!(Gravity::Top.offset(300, 100, true), 100);
    }

    #[test]
    fn a_decompression_bomb_is_refused_not_allocated() {
        // A PNG header claiming 60000 x 60000 pixels, a few bytes long.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&60000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&60000u32.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        match render(Some(&bomb), "b.png", &params()) {
            Err(PreviewError::TooLarge(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_images_get_a_placeholder() {
        let (out, mime) = render(
            None,
            "notes.txt",
            &Params {
                width: 64,
                ..params()
            },
        )
        .unwrap();
        assert_eq!(mime, "image/jpeg");
        assert_eq!(
            image::load_from_memory(&out).unwrap().dimensions(),
            (64, 64)
        );
    }
}
