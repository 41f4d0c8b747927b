//! Characters that render as nothing yet change what the tokenizer sees: zero-width characters,
//! bidirectional controls, tag characters, variation selectors and the other default-ignorable
//! code points.

/// Which kind of invisible character; `None` for anything visible (spaces included).
pub fn invisible_kind(c: char) -> Option<&'static str> {
    let kind = match c as u32 {
        0x200B..=0x200D | 0x2060 | 0xFEFF => "zero-width",
        0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069 => "bidi-control",
        0xE0000..=0xE007F => "tag",
        0xFE00..=0xFE0F | 0xE0100..=0xE01EF | 0x180B..=0x180D | 0x180F => "variation-selector",
        // Soft hyphen, Hangul fillers, invisible operators, ...: the rest of Default_Ignorable_Code_Point,
        // which is exactly what the UTS #39 skeleton drops.
        _ if is_default_ignorable(c) => "other-ignorable",
        _ => return None,
    };
    Some(kind)
}

pub fn is_invisible(c: char) -> bool {
    invisible_kind(c).is_some()
}

fn is_default_ignorable(c: char) -> bool {
    unicode_security::skeleton(c.encode_utf8(&mut [0; 4]))
        .next()
        .is_none()
}

/// `text` without its invisible characters.
pub fn remove_invisible(text: &str) -> String {
    text.chars().filter(|&c| !is_invisible(c)).collect()
}
