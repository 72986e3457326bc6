//! A look at a shared library's ELF headers before it is handed to the dynamic loader.
//!
//! `dlopen` maps a file by its headers; a file cut short inside a mapped segment loads, and the
//! process dies of SIGBUS when it touches the missing page. A plugin copied half-way (a full
//! disk, an interrupted update) must be refused instead, so the headers are checked against
//! the file's length first. A library for another machine (an ARM build on a PC) is named too.

use std::io::Read;
use std::path::Path;

use crate::error::Error;

/// How much of a file [`check_file`] reads: the ELF header and the program headers, which a
/// library's linker puts right after it (a few hundred bytes), never the whole library.
pub const HEAD_LEN: u64 = 64 * 1024;

/// Checks that the file at `path` is a complete ELF shared library for this machine, reading
/// its first [`HEAD_LEN`] bytes and its length only.
pub fn check_file(path: &Path) -> Result<(), Error> {
    let file =
        std::fs::File::open(path).map_err(|err| Error::Elf(format!("cannot read: {err}")))?;
    let len = file
        .metadata()
        .map_err(|err| Error::Elf(format!("cannot read: {err}")))?
        .len();
    let mut head = Vec::new();
    file.take(HEAD_LEN)
        .read_to_end(&mut head)
        .map_err(|err| Error::Elf(format!("cannot read: {err}")))?;
    check(&head, len)
}

/// Checks that a file of `len` bytes beginning with `bytes` is a complete ELF shared library
/// for this machine.
pub fn check(bytes: &[u8], len: u64) -> Result<(), Error> {
    if bytes.len() < 16 || &bytes[..4] != b"\x7fELF" {
        return Err(Error::Elf("not a shared library (no ELF header)".into()));
    }
    let is64 = match bytes[4] {
        1 => false,
        2 => true,
        _ => {
            return Err(Error::Elf(
                "not a shared library (unknown ELF class)".into(),
            ))
        }
    };
    let little = match bytes[5] {
        1 => true,
        2 => false,
        _ => {
            return Err(Error::Elf(
                "not a shared library (unknown ELF byte order)".into(),
            ))
        }
    };
    let header_len = if is64 { 64 } else { 52 };
    let truncated = |needed: u64| {
        Error::Elf(format!(
            "truncated: the file has {len} bytes but its ELF headers describe at least {needed}"
        ))
    };
    if bytes.len() < header_len {
        return Err(truncated(header_len as u64));
    }
    let read = |at: usize, size: usize| -> u64 {
        let field = &bytes[at..at + size];
        let mut value = 0u64;
        for k in 0..size {
            let byte = if little {
                field[size - 1 - k]
            } else {
                field[k]
            };
            value = (value << 8) | u64::from(byte);
        }
        value
    };
    let word = if is64 { 8 } else { 4 };
    let kind = read(16, 2);
    if kind != 3 {
        return Err(Error::Elf(format!(
            "not a shared library (ELF type {kind}, a shared object is 3)"
        )));
    }
    let machine = read(18, 2);
    if let Some(own) = own_machine() {
        if machine != own.0 {
            return Err(Error::Elf(format!(
                "built for another machine (ELF machine {machine}; this one is {})",
                own.1
            )));
        }
    }
    let phoff = read(24 + word, word);
    let shoff = read(24 + 2 * word, word);
    let base = 24 + 3 * word + 4 + 2;
    let (phentsize, phnum) = (read(base, 2), read(base + 2, 2));
    let (shentsize, shnum) = (read(base + 4, 2), read(base + 6, 2));
    let program_headers_end = phoff + phentsize * phnum;
    for end in [program_headers_end, shoff + shentsize * shnum] {
        if end > len {
            return Err(truncated(end));
        }
    }
    if program_headers_end > bytes.len() as u64 {
        return Err(Error::Elf(format!(
            "not a library this daemon loads: its program headers end at byte \
             {program_headers_end}, past the first {} bytes it reads",
            bytes.len()
        )));
    }
    for k in 0..phnum {
        let at = (phoff + k * phentsize) as usize;
        if read(at, 4) != 1 {
            continue; // only PT_LOAD segments are mapped from the file
        }
        let (offset, filesz) = if is64 {
            (read(at + 8, 8), read(at + 32, 8))
        } else {
            (read(at + 4, 4), read(at + 16, 4))
        };
        if offset + filesz > len {
            return Err(truncated(offset + filesz));
        }
    }
    Ok(())
}

/// This machine's ELF `e_machine` and its name.
fn own_machine() -> Option<(u64, &'static str)> {
    match std::env::consts::ARCH {
        "x86_64" => Some((62, "x86_64")),
        "aarch64" => Some((183, "aarch64")),
        "arm" => Some((40, "arm")),
        "x86" => Some((3, "x86")),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests write their fixtures (clippy.toml).
mod tests {
    use super::{check, check_file, Error, HEAD_LEN};

    /// `check` of the first `len` bytes of `bytes`, read as `check_file` reads them.
    fn check_cut(bytes: &[u8], len: usize) -> Result<(), Error> {
        let head = &bytes[..len.min(HEAD_LEN as usize)];
        check(head, len as u64)
    }

    #[test]
    fn a_complete_file_passes_and_a_cut_one_is_refused() {
        // The test binary is a position-independent executable: ELF type 3, like a library.
        let path = std::env::current_exe().unwrap();
        let exe = std::fs::read(&path).unwrap();
        assert!(
            exe.len() as u64 > HEAD_LEN,
            "a file longer than what is read"
        );
        assert!(check_file(&path).is_ok());
        assert!(check_cut(&exe, exe.len()).is_ok());
        for cut in [100, exe.len() / 2, exe.len() - 1] {
            assert!(
                check_cut(&exe, cut)
                    .unwrap_err()
                    .to_string()
                    .starts_with("truncated"),
                "cut at {cut}"
            );
        }
        // Written cut short on disk, as an interrupted copy leaves it.
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut.so");
        std::fs::write(&cut, &exe[..exe.len() - 1]).unwrap();
        assert!(check_file(&cut)
            .unwrap_err()
            .to_string()
            .starts_with("truncated"));
    }

    #[test]
    fn text_and_short_files_are_refused() {
        let text = b"hello world, not a library";
        assert!(check(text, text.len() as u64)
            .unwrap_err()
            .to_string()
            .contains("no ELF header"));
        let header = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00";
        assert!(check(header, header.len() as u64)
            .unwrap_err()
            .to_string()
            .starts_with("truncated"));
    }

    #[test]
    fn program_headers_past_the_head_are_refused() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // The file is whole, but only its first 100 bytes were read.
        let err = check(&exe[..100], exe.len() as u64)
            .unwrap_err()
            .to_string();
        assert!(err.contains("program headers end at byte"), "{err}");
    }
}
