use clipdoor::text::homoglyph::*;
#[test]
fn explore() {
    let mut n = 0;
    let t = std::time::Instant::now();
    for c in (0x30000u32..=0x10FFFF).filter_map(char::from_u32) {
        let s: String = skeleton(&c.to_string());
        if !s.is_empty() && s != c.to_string() { n += 1; if n < 5 { eprintln!("{:X} -> {:?}", c as u32, s); } }
    }
    eprintln!("high planes: {n} confusables in {:?}", t.elapsed());
}
