//! `veritrace qr CODE`: the QR code of a code's GS1 Digital Link URI, as PNG or SVG, for
//! labels. Offline: nothing is asked of a node. The image is the one the node serves at
//! `…/qr.png` and `…/qr.svg` for the same URI (docs/consumer.md): the rendering is the
//! node's own `qr` module, compiled in here from its source file, since the CLI does not
//! link the node crate.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use veritrace_ledger::ids::parse_digital_link;

use crate::exit::{Failure, OrExit};
use crate::output::Out;

#[path = "../../node/src/qr.rs"]
mod render;

/// The GS1 Digital Link resolver domain, used when no `--base` is given.
pub const BASE_DEFAULT: &str = "https://id.gs1.org";

#[derive(Args)]
pub struct QrArgs {
    /// The code: a GS1 Digital Link path or URI (`01/{gtin}/21/{serial}`, optionally with
    /// `/10/{lot}` before the serial; `01/{gtin}/10/{lot}`; `00/{sscc}`).
    pub code: String,
    /// Where to write the image; `-` (the default) is standard output.
    #[arg(short = 'o', long = "out", default_value = "-")]
    pub out: PathBuf,
    /// SVG instead of PNG.
    #[arg(long)]
    pub svg: bool,
    /// Scheme and host (and path prefix) of the URI: a node's HTTP address
    /// (`http://10.200.0.2:7002`) or a resolver that sends scanners to one.
    #[arg(long, default_value = BASE_DEFAULT)]
    pub base: String,
}

/// Checks `base`: http(s), a host, no query, fragment or white space.
fn check_base(base: &str) -> anyhow::Result<()> {
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
        .ok_or_else(|| anyhow!("--base {base:?} must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        bail!("--base {base:?} has no host");
    }
    if let Some(c) = base.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#')) {
        bail!("--base {base:?} may not contain {c:?}");
    }
    Ok(())
}

/// The URI and the image of `args`.
fn make(args: &QrArgs) -> anyhow::Result<(String, Vec<u8>)> {
    check_base(&args.base)?;
    let link = parse_digital_link(&args.code)
        .with_context(|| format!("code {:?} (a QR code carries a GS1 Digital Link)", args.code))?;
    let uri = render::digital_link_uri(&args.base, &render::digital_link_path(&link));
    let image = if args.svg { render::svg(&uri).map(String::into_bytes) } else { render::png(&uri) }?;
    Ok((uri, image))
}

pub fn run(args: &QrArgs, out: &Out) -> Result<(), Failure> {
    let (uri, image) = make(args).or_bad_input()?;
    let to_stdout = args.out.as_os_str() == "-";
    if to_stdout {
        if out.json {
            return Err(Failure::bad_input(anyhow!("--json needs -o FILE: the image would share standard output")));
        }
        let mut stdout = std::io::stdout().lock();
        if !args.svg && stdout.is_terminal() {
            return Err(Failure::bad_input(anyhow!("not writing a PNG to a terminal; give -o FILE or --svg")));
        }
        stdout
            .write_all(&image)
            .and_then(|_| stdout.flush())
            .context("write the image to standard output")
            .or_bad_input()?;
        out.note(format!("qr code of {uri}"));
        return Ok(());
    }
    std::fs::write(&args.out, &image).with_context(|| format!("write {}", args.out.display())).or_bad_input()?;
    let format = if args.svg { "svg" } else { "png" };
    out.emit(
        serde_json::json!({"ok": true, "uri": uri, "file": args.out.display().to_string(), "format": format, "bytes": image.len()}),
        || format!("wrote {} ({format}, {} bytes): qr code of {uri}", args.out.display(), image.len()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(code: &str, base: &str, svg: bool) -> QrArgs {
        QrArgs { code: code.into(), out: "-".into(), svg, base: base.into() }
    }

    #[test]
    fn encodes_the_canonical_digital_link_under_the_base() {
        let (uri, png) =
            make(&args("https://x.example/01/9312345000012/10/L1/21/S%2f1", "http://127.0.0.1:7002/", false)).unwrap();
        assert_eq!(uri, "http://127.0.0.1:7002/01/09312345000012/10/L1/21/S%2F1");
        assert_eq!(png, render::png(&uri).unwrap(), "the node's bytes for the same uri");
        let (uri, svg) = make(&args("01/09312345000012/21/S1", BASE_DEFAULT, true)).unwrap();
        assert_eq!(uri, "https://id.gs1.org/01/09312345000012/21/S1");
        assert!(String::from_utf8(svg).unwrap().contains("<svg"));
    }

    #[test]
    fn names_what_is_wrong() {
        let e = make(&args("01/09312345000013/21/S1", BASE_DEFAULT, false)).unwrap_err();
        assert!(format!("{e:#}").contains("check digit"), "{e:#}");
        let e = make(&args("ecode:1234567890123456", BASE_DEFAULT, false)).unwrap_err();
        assert!(format!("{e:#}").contains("Digital Link"), "{e:#}");
        for base in ["ftp://h", "https://", "https://h/p?x=1", "https://h k"] {
            assert!(make(&args("01/09312345000012/21/S1", base, false)).is_err(), "{base}");
        }
    }
}
