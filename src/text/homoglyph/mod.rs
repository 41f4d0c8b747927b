//! Unicode look-alike characters (homoglyphs) on the prompt side: find them ([`scan()`]), undo them
//! ([`sanitize()`]) and make them ([`attack_variants`]); how far they move a text encoder's embedding
//! is measured one layer up, in `crate::scan::shift`. Built on UTS #39: confusable skeletons,
//! mixed-script detection, restriction levels.
pub mod attack;
pub mod confusables;
pub mod invisible;
pub mod sanitize;
pub mod scan;

pub use attack::{attack_variants, AttackSpec, Count, Substitution, Variant};
pub use confusables::{
    confusables_by_family, confusables_of, family_of, known_families, latin_lookalike, skeleton,
    skeleton_nfc, Lookalike,
};
pub use invisible::{invisible_kind, is_invisible, remove_invisible};
pub use sanitize::{
    analyze, sanitize, sanitize_with, to_latin, Flag, Mode, Reason, SanitizeOptions,
};
pub use scan::{restriction_level, scan, ScanReport};
