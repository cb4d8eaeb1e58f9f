//! What the CLI prints. Text that came from a server (names, messages, audit entries, error
//! messages) is shown with its control characters escaped, so that it cannot move the cursor,
//! recolour or clear the terminal; and a stdout whose reader went away (`aloft audit | head -3`)
//! ends the command quietly instead of with a panic.
//!
//! Every line on stdout goes through [`line`] (the `outln!` macro) or [`json`], which escape the
//! whole line: there is no argument to forget.

use std::borrow::Cow;
use std::fmt::{self, Display, Write as _};
use std::io::{self, Write};

use serde::Serialize;

/// C0 controls (all of them: newline, tab and escape included), DEL and C1 controls.
fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// `text` with every control character written as a visible `\u{1b}`-style escape.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_control(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// stdout was closed by whoever reads it: the command stops and exits successfully, silently.
#[derive(Debug)]
pub struct StdoutClosed;

impl Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Whether an error only means that stdout went away.
pub fn is_stdout_closed(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<StdoutClosed>())
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// One line on stdout, escaped with [`clean`].
pub fn line(text: impl Display) -> anyhow::Result<()> {
    let mut text = clean(&text.to_string()).into_owned();
    text.push('\n');
    write_stdout(&text)
}

/// Several lines on stdout, each escaped with [`clean`] (the line breaks stay).
pub fn block(text: &str) -> anyhow::Result<()> {
    let mut out = String::with_capacity(text.len() + 1);
    for l in text.lines() {
        out.push_str(&clean(l));
        out.push('\n');
    }
    write_stdout(&out)
}

/// `value` as pretty JSON on stdout. serde_json already escapes C0 controls inside strings; DEL
/// and C1 controls, which JSON allows raw, are escaped too (`\u0085`), so the output is still
/// JSON that means the same.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        // Outside strings pretty JSON has only ASCII structure and whitespace, which stays.
        if matches!(c, '\u{7f}'..='\u{9f}') {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out.push('\n');
    write_stdout(&out)
}

/// A line on stderr, escaped with [`clean`]; a closed stderr is ignored.
pub fn note(text: impl Display) {
    let mut text = clean(&text.to_string()).into_owned();
    text.push('\n');
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// `println!` for the CLI: formats, escapes control characters, writes to stdout, and returns an
/// error (a [`StdoutClosed`] one when the reader went away) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

/// `eprintln!` for text that may come from a server: escaped, and never panics.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::note(format_args!($($arg)*))
    };
}

pub(crate) use {errln, outln};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(clean("plain text, ünïcode ✓"), Cow::Borrowed(_)));
        assert_eq!(clean("red \u{1b}[31mtext"), "red \\u{1b}[31mtext");
        assert_eq!(clean("a\nb\tc\r\0"), "a\\u{a}b\\u{9}c\\u{d}\\u{0}");
        assert_eq!(
            clean("del \u{7f} csi \u{9b} nel \u{85}"),
            "del \\u{7f} csi \\u{9b} nel \\u{85}"
        );
        // Idempotent: escaped text has nothing left to escape.
        let once = clean("\u{1b}]0;title\u{7}").into_owned();
        assert_eq!(clean(&once), once);
    }
}
