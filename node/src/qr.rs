//! QR codes of GS1 Digital Link URIs, as SVG and as PNG.
//!
//! The `qrcode` crate makes the module matrix and lays it out (quiet zone, module size);
//! SVG is its own renderer, PNG a 1-bit greyscale image from a canvas of ours, written
//! with stored (uncompressed) deflate blocks, so no image or compression crate is needed.
//! A label of 45 × 45 modules at 8 pixels each is about 17 KB.
//!
//! This file is shared, by path, with the CLI (`veritrace qr`), which does not link the
//! node: both print the same bytes for the same URI.

use qrcode::render::{Canvas, Pixel, svg};
use qrcode::{EcLevel, QrCode};
use veritrace_ledger::ids::{DigitalLink, SubjectId};

/// Pixels per module: 8 prints at 2 mm a module at 100 dpi and scans from a screen.
pub const QR_MODULE_PX: u32 = 8;
/// Longest URI put in a code; a GS1 Digital Link path is at most ~90 characters, the rest
/// is for the host.
pub const QR_URI_BYTES_MAX: usize = 512;

/// Why a QR code could not be made. (`Display` by hand: the CLI, which shares this file,
/// does not use thiserror.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QrError {
    TooLong { got: usize },
    Encode { uri: String, reason: String },
}

impl std::fmt::Display for QrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QrError::TooLong { got } => write!(f, "uri of {got} bytes is longer than {QR_URI_BYTES_MAX}"),
            QrError::Encode { uri, reason } => write!(f, "uri {uri:?} does not fit in a qr code: {reason}"),
        }
    }
}

impl std::error::Error for QrError {}

/// The canonical Digital Link path of `link` without its leading slash: the subject's
/// canonical form, with the lot before the serial if the link carried one
/// (`01/{gtin}/10/{lot}/21/{serial}`).
pub fn digital_link_path(link: &DigitalLink) -> String {
    match (&link.subject, &link.lot) {
        (SubjectId::Item { gtin, serial }, Some(lot)) => format!(
            "01/{gtin}/10/{}/21/{}",
            SubjectId::encode_component(lot.as_str()),
            SubjectId::encode_component(serial.as_str())
        ),
        (code, _) => code.to_string(),
    }
}

/// The Digital Link URI of `path` (a Digital Link path, e.g. `01/09312345000012/21/S1`)
/// under `base` (scheme and host, optionally a path prefix: `https://id.example.com`).
pub fn digital_link_uri(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

fn code(uri: &str) -> Result<QrCode, QrError> {
    if uri.len() > QR_URI_BYTES_MAX {
        return Err(QrError::TooLong { got: uri.len() });
    }
    // Level M: a printed label survives ~15% damage, and the code stays small.
    QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)
        .map_err(|e| QrError::Encode { uri: uri.to_string(), reason: e.to_string() })
}

/// The QR code of `uri` as an SVG document (black on white, with the quiet zone).
pub fn svg(uri: &str) -> Result<String, QrError> {
    Ok(code(uri)?.render::<svg::Color>().module_dimensions(QR_MODULE_PX, QR_MODULE_PX).build())
}

/// The QR code of `uri` as a PNG image (1-bit greyscale, with the quiet zone).
pub fn png(uri: &str) -> Result<Vec<u8>, QrError> {
    Ok(code(uri)?.render::<Bit>().module_dimensions(QR_MODULE_PX, QR_MODULE_PX).build())
}

/// A 1-bit pixel; the canvas is black on white whatever colours the renderer passes.
#[derive(Clone, Copy)]
struct Bit;

impl Pixel for Bit {
    type Image = Vec<u8>;
    type Canvas = BitCanvas;

    fn default_color(_: qrcode::Color) -> Self {
        Bit
    }
}

/// Rows of PNG scanlines: a filter byte (0, none) then the pixels, 8 to a byte, most
/// significant bit first; a set bit is white (greyscale 1), so a new canvas is all white.
struct BitCanvas {
    width: u32,
    height: u32,
    row_bytes: usize,
    rows: Vec<u8>,
}

impl Canvas for BitCanvas {
    type Pixel = Bit;
    type Image = Vec<u8>;

    fn new(width: u32, height: u32, _dark: Bit, _light: Bit) -> Self {
        let row_bytes = 1 + (width as usize).div_ceil(8);
        let mut rows = vec![0xFF; row_bytes * height as usize];
        for r in rows.chunks_mut(row_bytes) {
            r[0] = 0;
        }
        BitCanvas { width, height, row_bytes, rows }
    }

    fn draw_dark_pixel(&mut self, x: u32, y: u32) {
        let i = y as usize * self.row_bytes + 1 + x as usize / 8;
        self.rows[i] &= !(0x80 >> (x % 8));
    }

    fn into_image(self) -> Vec<u8> {
        let mut ihdr = Vec::with_capacity(13);
        ihdr.extend_from_slice(&self.width.to_be_bytes());
        ihdr.extend_from_slice(&self.height.to_be_bytes());
        // Bit depth 1, colour type 0 (greyscale), deflate, adaptive filtering, no interlace.
        ihdr.extend_from_slice(&[1, 0, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &zlib_stored(&self.rows));
        chunk(&mut out, b"IEND", &[]);
        out
    }
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let len = u32::try_from(data.len()).expect("a qr png chunk is far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream (RFC 1950) of stored deflate blocks (RFC 1951 §3.2.4).
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 65_535;
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(BLOCK).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(b) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = b.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(b);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5_552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65_521;
        b %= 65_521;
    }
    (b << 16) | a
}

/// CRC-32 (ISO-HDLC, as PNG uses), bit by bit: a label is a few kilobytes.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in data {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn png_has_the_size_of_the_code_and_its_quiet_zone() {
        let link = veritrace_ledger::ids::parse_digital_link("01/9312345000012/10/L%2f1/21/S1").unwrap();
        assert_eq!(digital_link_path(&link), "01/09312345000012/10/L%2F1/21/S1");
        let uri = digital_link_uri("https://id.example.com/", "01/09312345000012/21/S1");
        assert_eq!(uri, "https://id.example.com/01/09312345000012/21/S1");
        let modules = code(&uri).unwrap().width() as u32 + 8;
        let png = png(&uri).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((w, h), (modules * QR_MODULE_PX, modules * QR_MODULE_PX));
        assert!(png.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]));
        assert!(svg(&uri).unwrap().contains("<svg"));
    }

    #[test]
    fn stored_deflate_splits_long_data_into_blocks() {
        let data = vec![7u8; 70_000];
        let z = zlib_stored(&data);
        assert_eq!(z.len(), 2 + 5 + 65_535 + 5 + (70_000 - 65_535) + 4);
        assert_eq!(z[2], 0, "first block is not final");
        assert_eq!(z[2 + 5 + 65_535], 1, "last block is final");
    }

    #[test]
    fn refuses_a_uri_too_long() {
        assert_eq!(png(&"x".repeat(QR_URI_BYTES_MAX + 1)), Err(QrError::TooLong { got: QR_URI_BYTES_MAX + 1 }));
    }
}
