//! Pictures of a camera with its detections drawn: the latest as one JPEG,
//! and a live MJPEG stream (`multipart/x-mixed-replace`) that any browser,
//! VLC or NVR can show without JavaScript.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::{self, Bytes};
use actix_web::{http::header, HttpResponse};

use crate::api::{known_camera, ApiError, ErrorBody};
use crate::auth::{Credential, StillAllowed};
use crate::sse::Closing;
use crate::{AppState, LiveDetection, Snapshot};

/// How often the stream looks for a newer analysed frame.
const STREAM_POLL: Duration = Duration::from_millis(100);
const BOUNDARY: &str = "vigil-frame";
const LINE: usize = 2;

/// A colour per label, stable across frames, bright enough on video.
fn colour(label: &str) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 6] = [
        [255, 64, 64],
        [64, 220, 64],
        [64, 160, 255],
        [255, 200, 0],
        [220, 64, 255],
        [0, 230, 230],
    ];
    let h = label
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31) + b as usize);
    PALETTE[h % PALETTE.len()]
}

/// Draws each detection's box outline into an RGB frame, clipped to it.
pub(crate) fn draw_boxes(rgb: &mut [u8], width: u32, height: u32, dets: &[LiveDetection]) {
    let (w, h) = (width as i64, height as i64);
    if w == 0 || h == 0 || rgb.len() < (w * h * 3) as usize {
        return;
    }
    let mut put = |x: i64, y: i64, c: [u8; 3]| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            let i = ((y * w + x) * 3) as usize;
            rgb[i..i + 3].copy_from_slice(&c);
        }
    };
    for d in dets {
        let c = colour(&d.label);
        let [x0, y0, x1, y1] = d
            .bbox
            .map(|v| if v.is_finite() { v.round() as i64 } else { 0 });
        let (x0, x1) = (x0.clamp(0, w - 1), x1.clamp(0, w - 1));
        let (y0, y1) = (y0.clamp(0, h - 1), y1.clamp(0, h - 1));
        for t in 0..LINE as i64 {
            for x in x0..=x1 {
                put(x, y0 + t, c);
                put(x, y1 - t, c);
            }
            for y in y0..=y1 {
                put(x0 + t, y, c);
                put(x1 - t, y, c);
            }
        }
    }
}

/// The camera's latest analysed frame with its detections boxed.
#[utoipa::path(get, path = "/api/v1/cameras/{id}/latest.jpg", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    responses((status = 200, content_type = "image/jpeg", body = Vec<u8>),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn latest_jpeg(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    known_camera(&state, &id)?;
    let snap = state
        .live
        .latest(&id)
        .ok_or_else(|| ApiError::NotFound(format!("camera {id:?} has no analysed frame yet")))?;
    frame_response(snap, true).await
}

/// One analysed frame as a JPEG response, plain or with its boxes drawn.
pub(crate) async fn frame_response(
    snap: Arc<Snapshot>,
    with_boxes: bool,
) -> Result<HttpResponse, ApiError> {
    let seq = snap.seq;
    let jpeg = web::block(move || {
        let jpeg = if with_boxes {
            snap.annotated_jpeg()
        } else {
            snap.jpeg()
        };
        jpeg.map(<[u8]>::to_vec)
    })
    .await
    .map_err(|e| ApiError::Storage(e.to_string()))?
    .ok_or_else(|| ApiError::NotFound("frame could not be encoded".into()))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "image/jpeg"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Seq", seq.to_string()))
        .body(jpeg))
}

/// Every newly analysed frame with boxes, as an MJPEG stream.
#[utoipa::path(get, path = "/api/v1/cameras/{id}/stream.mjpeg", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    responses((status = 200, content_type = "multipart/x-mixed-replace", body = Vec<u8>),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn mjpeg(
    state: web::Data<AppState>,
    closing: web::Data<Closing>,
    id: web::Path<String>,
    credential: web::ReqData<Credential>,
) -> Result<HttpResponse, ApiError> {
    known_camera(&state, &id)?;
    let camera = id.into_inner();
    let caller = StillAllowed::new(credential.into_inner(), state.auth.clone());
    let start = (caller, None::<u64>);
    let stream = futures_util::stream::unfold(start, move |(mut caller, last)| {
        let (state, closing, camera) = (state.clone(), closing.clone(), camera.clone());
        async move {
            loop {
                if closing.0.load(Ordering::Relaxed) || !caller.check() {
                    return None;
                }
                if let Some(snap) = state.live.latest(&camera).filter(|s| Some(s.seq) != last) {
                    let seq = snap.seq;
                    let part = web::block(move || snap.annotated_jpeg().map(part)).await;
                    if let Ok(Some(part)) = part {
                        return Some((Ok::<_, actix_web::Error>(part), (caller, Some(seq))));
                    }
                }
                actix_web::rt::time::sleep(STREAM_POLL).await;
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type(format!("multipart/x-mixed-replace; boundary={BOUNDARY}"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}

fn part(jpeg: &[u8]) -> Bytes {
    let mut out = format!(
        "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
        jpeg.len()
    )
    .into_bytes();
    out.extend_from_slice(jpeg);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_drawn_on_their_edges_and_clipped_to_the_frame() {
        let (w, h) = (20u32, 10u32);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        let det = |bbox| LiveDetection {
            label: "person".into(),
            score: 0.9,
            bbox,
            track: None,
        };
        draw_boxes(
            &mut rgb,
            w,
            h,
            &[det([2.0, 2.0, 8.0, 6.0]), det([15.0, -5.0, 99.0, f32::NAN])],
        );
        let px = |x: u32, y: u32| &rgb[((y * w + x) * 3) as usize..][..3];
        assert_eq!(px(2, 2), colour("person"));
        assert_eq!(px(8, 6), colour("person"));
        assert_eq!(px(5, 4), [0, 0, 0], "inside stays untouched");
        assert_eq!(px(0, 9), [0, 0, 0]);
        assert_eq!(px(19, 0), colour("person"), "clipped box drawn at the edge");
    }
}
