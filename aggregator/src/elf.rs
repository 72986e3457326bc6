//! A look at a shared library's ELF headers before it is handed to the dynamic loader.
//!
//! `dlopen` maps a file by its headers; a file cut short inside a mapped segment loads, and the
//! process dies of SIGBUS when it touches the missing page. A plugin copied half-way (a full
//! disk, an interrupted update) must be refused instead, so the headers are checked against
//! the file's length first. A library for another machine (an ARM build on a PC) is named too.

/// Checks that `bytes` is a complete ELF shared library for this machine.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 16 || &bytes[..4] != b"\x7fELF" {
        return Err("not a shared library (no ELF header)".into());
    }
    let is64 = match bytes[4] {
        1 => false,
        2 => true,
        _ => return Err("not a shared library (unknown ELF class)".into()),
    };
    let little = match bytes[5] {
        1 => true,
        2 => false,
        _ => return Err("not a shared library (unknown ELF byte order)".into()),
    };
    let header_len = if is64 { 64 } else { 52 };
    let truncated = |needed: u64| {
        format!(
            "truncated: the file has {} bytes but its ELF headers describe at least {needed}",
            bytes.len()
        )
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
        return Err(format!(
            "not a shared library (ELF type {kind}, a shared object is 3)"
        ));
    }
    let machine = read(18, 2);
    if let Some(own) = own_machine() {
        if machine != own.0 {
            return Err(format!(
                "built for another machine (ELF machine {machine}; this one is {})",
                own.1
            ));
        }
    }
    let phoff = read(24 + word, word);
    let shoff = read(24 + 2 * word, word);
    let base = 24 + 3 * word + 4 + 2;
    let (phentsize, phnum) = (read(base, 2), read(base + 2, 2));
    let (shentsize, shnum) = (read(base + 4, 2), read(base + 6, 2));
    let len = bytes.len() as u64;
    for end in [phoff + phentsize * phnum, shoff + shentsize * shnum] {
        if end > len {
            return Err(truncated(end));
        }
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
mod tests {
    use super::check;

    #[test]
    fn a_complete_file_passes_and_a_cut_one_is_refused() {
        // The test binary is a position-independent executable: ELF type 3, like a library.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(check(&exe), Ok(()));
        for cut in [100, exe.len() / 2, exe.len() - 1] {
            assert!(
                check(&exe[..cut]).unwrap_err().starts_with("truncated"),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn text_and_short_files_are_refused() {
        assert!(check(b"hello world, not a library")
            .unwrap_err()
            .contains("no ELF header"));
        assert!(
            check(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00")
                .unwrap_err()
                .starts_with("truncated")
        );
    }
}
