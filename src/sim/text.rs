//! What a reply is written in, and the word rule that counts text without a tokenizer.
//!
//! A [`Charset`] is a short fixed vocabulary and how its units are joined: `ascii` (the
//! simulator's historical English words), `cjk` (Han and kana words written without spaces),
//! `emoji` (multi-code-point sequences included: ZWJ families, skin tones, flags, keycaps),
//! `rtl` (Arabic and Hebrew words) and `combining` (Latin and Vietnamese words spelled with
//! combining marks, never precomposed). Replies draw units from it, one unit per stream chunk.
//!
//! [`words`] is the word rule ([`super::tokenizer::Tokenizer::Words`]): whitespace-separated
//! words, except that each Han, Hiragana or Katakana character is a word of its own, as BERT's
//! basic tokenizer splits CJK characters (Hangul is not: Korean separates words with spaces).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The script a reply is written in (per deployment, or per request with `sim_charset`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Charset {
    /// English words joined by spaces: the simulator's replies as they always were.
    #[default]
    Ascii,
    /// Chinese and Japanese words (Han, Hiragana, Katakana), written without spaces.
    Cjk,
    /// Emoji joined by spaces, among them ZWJ sequences, skin-tone modifiers, flags, keycaps.
    Emoji,
    /// Arabic and Hebrew words joined by spaces.
    Rtl,
    /// Latin and Vietnamese words with combining marks (`e` + U+0301, not `é`), joined by spaces.
    Combining,
}

/// A value that is not a charset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a charset: ascii, cjk, emoji, rtl or combining")]
pub struct BadCharset(pub String);

impl Charset {
    pub const ALL: [Charset; 5] = [
        Charset::Ascii,
        Charset::Cjk,
        Charset::Emoji,
        Charset::Rtl,
        Charset::Combining,
    ];

    /// Every charset but `ascii`.
    pub const NON_ASCII: [Charset; 4] = [Charset::Cjk, Charset::Emoji, Charset::Rtl, Charset::Combining];

    /// The names, as the wire writes them, for error messages.
    pub const NAMES: &'static str = "ascii, cjk, emoji, rtl, combining";

    pub fn name(self) -> &'static str {
        match self {
            Self::Ascii => "ascii",
            Self::Cjk => "cjk",
            Self::Emoji => "emoji",
            Self::Rtl => "rtl",
            Self::Combining => "combining",
        }
    }

    /// The units a reply is drawn from.
    pub fn vocabulary(self) -> &'static [&'static str] {
        match self {
            Self::Ascii => &ASCII,
            Self::Cjk => &CJK,
            Self::Emoji => &EMOJI,
            Self::Rtl => &RTL,
            Self::Combining => &COMBINING,
        }
    }

    /// [`words`] of each unit of [`Charset::vocabulary`], in its order: counted once per
    /// process, not once per unit of every reply.
    pub fn unit_words(self) -> &'static [u64] {
        static COUNTS: std::sync::OnceLock<[Vec<u64>; 5]> = std::sync::OnceLock::new();
        let all = COUNTS.get_or_init(|| Charset::ALL.map(|c| c.vocabulary().iter().map(|u| words(u)).collect()));
        let at = Charset::ALL.iter().position(|c| *c == self).unwrap_or(0);
        &all[at]
    }

    /// What goes between two units.
    pub fn separator(self) -> &'static str {
        match self {
            Self::Cjk => "",
            _ => " ",
        }
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Charset {
    type Err = BadCharset;
    fn from_str(s: &str) -> Result<Self, BadCharset> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| BadCharset(s.to_owned()))
    }
}

/// Whether `c` is a word on its own by the word rule: a Han ideograph (the unified blocks,
/// their extensions and the compatibility ideographs), Hiragana or Katakana (with the phonetic
/// extensions and halfwidth forms).
pub fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{309F}'     // Hiragana
        | '\u{30A0}'..='\u{30FF}'   // Katakana
        | '\u{31F0}'..='\u{31FF}'   // Katakana phonetic extensions
        | '\u{FF66}'..='\u{FF9F}'   // halfwidth Katakana
        | '\u{3400}'..='\u{4DBF}'   // CJK extension A
        | '\u{4E00}'..='\u{9FFF}'   // CJK unified ideographs
        | '\u{F900}'..='\u{FAFF}'   // CJK compatibility ideographs
        | '\u{20000}'..='\u{2FA1F}' // extensions B-F, compatibility supplement
        | '\u{30000}'..='\u{323AF}' // extensions G-H
    )
}

/// The word rule: whitespace-separated words, each CJK character ([`is_cjk`]) a word of its
/// own. Linear, allocates nothing. For text without CJK characters it is
/// `s.split_whitespace().count()`.
pub fn words(s: &str) -> u64 {
    let mut n = 0;
    let mut in_word = false;
    let bytes = s.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        // ASCII, most of most prompts, a byte at a time: it is never CJK, and its whitespace
        // (`char::is_whitespace`) is tab to carriage return and space. Any other character is
        // decoded and looked up.
        let (space, cjk) = if bytes[at].is_ascii() {
            at += 1;
            (matches!(bytes[at - 1], b'\t'..=b'\r' | b' '), false)
        } else {
            let c = s[at..].chars().next().unwrap_or_default();
            at += c.len_utf8();
            (c.is_whitespace(), is_cjk(c))
        };
        if space {
            in_word = false;
        } else if cjk {
            n += 1;
            in_word = false;
        } else if !in_word {
            n += 1;
            in_word = true;
        }
    }
    n
}

/// The simulator's historical vocabulary: replies in `ascii` are what they always were.
const ASCII: [&str; 32] = [
    "the",
    "router",
    "answers",
    "quickly",
    "and",
    "every",
    "token",
    "counts",
    "a",
    "simulated",
    "model",
    "replies",
    "with",
    "plain",
    "words",
    "so",
    "tests",
    "can",
    "check",
    "cost",
    "latency",
    "fallback",
    "chains",
    "hold",
    "under",
    "load",
    "when",
    "providers",
    "fail",
    "on",
    "cue",
    "today",
];

/// Japanese (kanji, hiragana, katakana) and Chinese (simplified and traditional) words; a few
/// are one character, so even a one-token `max_tokens` finds a unit that fits.
const CJK: [&str; 32] = [
    "東京",
    "日本語",
    "こんにちは",
    "ありがとう",
    "テスト",
    "モデル",
    "データ",
    "計算",
    "速い",
    "世界",
    "言葉",
    "水",
    "山",
    "の",
    "を",
    "です",
    "ルーター",
    "トークン",
    "数える",
    "返事",
    "中文",
    "汉字",
    "学习",
    "模型",
    "路由器",
    "测试",
    "你好",
    "谢谢",
    "简体",
    "繁體",
    "漢字",
    "電腦",
];

/// Single code points, and sequences that are one glyph of several code points.
const EMOJI: [&str; 32] = [
    "\u{1F600}",                                                       // grinning face
    "\u{1F680}",                                                       // rocket
    "\u{1F389}",                                                       // party popper
    "\u{1F525}",                                                       // fire
    "\u{2728}",                                                        // sparkles
    "\u{2764}\u{FE0F}",                                                // red heart (VS16)
    "\u{1F44D}\u{1F3FD}",                                              // thumbs up, medium skin
    "\u{1F44B}\u{1F3FF}",                                              // waving hand, dark skin
    "\u{1F937}\u{1F3FB}\u{200D}\u{2640}\u{FE0F}",                      // woman shrugging, light skin
    "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466}",    // family (ZWJ)
    "\u{1F469}\u{200D}\u{1F4BB}",                                      // woman technologist (ZWJ)
    "\u{1F9D1}\u{1F3FE}\u{200D}\u{1F680}",                             // astronaut, medium-dark skin
    "\u{1F3F3}\u{FE0F}\u{200D}\u{1F308}",                              // rainbow flag
    "\u{1F1EF}\u{1F1F5}",                                              // flag: Japan
    "\u{1F1FA}\u{1F1F8}",                                              // flag: United States
    "\u{1F1E7}\u{1F1F7}",                                              // flag: Brazil
    "\u{1F1FA}\u{1F1E6}",                                              // flag: Ukraine
    "1\u{FE0F}\u{20E3}",                                               // keycap 1
    "#\u{FE0F}\u{20E3}",                                               // keycap #
    "*\u{FE0F}\u{20E3}",                                               // keycap *
    "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}", // flag: Scotland (tags)
    "\u{1F408}\u{200D}\u{2B1B}",                                       // black cat (ZWJ)
    "\u{1F642}",                                                       // slightly smiling face
    "\u{1F30D}",                                                       // globe
    "\u{2615}",                                                        // hot beverage
    "\u{1F363}",                                                       // sushi
    "\u{1F4A1}",                                                       // light bulb
    "\u{2705}",                                                        // check mark button
    "\u{26A1}",                                                        // high voltage
    "\u{1F916}",                                                       // robot
    "\u{1F440}",                                                       // eyes
    "\u{1F9EA}",                                                       // test tube
];

/// Arabic, then Hebrew.
const RTL: [&str; 32] = [
    "مرحبا",
    "سلام",
    "كتاب",
    "نموذج",
    "اختبار",
    "شكرا",
    "سريع",
    "عالم",
    "لغة",
    "بيانات",
    "رمز",
    "جواب",
    "الموجه",
    "تكلفة",
    "اليوم",
    "كل",
    "שלום",
    "עולם",
    "מודל",
    "בדיקה",
    "תודה",
    "מהר",
    "ספר",
    "נתונים",
    "שפה",
    "תשובה",
    "עלות",
    "היום",
    "כל",
    "אסימון",
    "נתב",
    "זמן",
];

/// Every unit carries at least one combining mark (U+0300..U+036F) after its base letter.
const COMBINING: [&str; 32] = [
    "cafe\u{301}",                // café
    "nai\u{308}ve",               // naïve
    "re\u{301}sume\u{301}",       // résumé
    "u\u{308}ber",                // über
    "man\u{303}ana",              // mañana
    "co\u{302}te\u{301}",         // côté
    "pin\u{303}ata",              // piñata
    "Zu\u{308}rich",              // Zürich
    "franc\u{327}ais",            // français
    "Mu\u{308}nchen",             // München
    "Sa\u{303}o",                 // São
    "A\u{30A}ngstro\u{308}m",     // Ångström
    "e\u{301}le\u{300}ve",        // élève
    "garc\u{327}on",              // garçon
    "Vie\u{323}\u{302}t",         // Việt
    "tie\u{302}\u{301}ng",        // tiếng
    "cha\u{300}o",                // chào
    "ngu\u{31B}o\u{31B}\u{300}i", // người
    "Ha\u{300}",                  // Hà
    "No\u{323}\u{302}i",          // Nội
    "\u{111}e\u{323}p",           // đẹp
    "nu\u{31B}o\u{31B}\u{301}c",  // nước
    "pho\u{31B}\u{309}",          // phở
    "ba\u{301}nh",                // bánh
    "mi\u{300}",                  // mì
    "ca\u{309}m",                 // cảm
    "o\u{31B}n",                  // ơn
    "kho\u{309}e",                // khỏe
    "Hue\u{302}\u{301}",          // Huế
    "Ho\u{302}\u{300}",           // Hồ
    "Chi\u{301}",                 // Chí
    "tra\u{300}",                 // trà
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_rule_splits_cjk_characters_and_nothing_else() {
        assert_eq!(words(""), 0);
        assert_eq!(words("  hello   there\tworld\n"), 3);
        // Each Han or kana character is a word; no spaces needed around them.
        assert_eq!(words("東京は日本の首都です"), 10);
        assert_eq!(words("カタカナとひらがな"), 9);
        assert_eq!(words("学习汉字"), 4);
        // Mixed: Latin runs are words, CJK characters split them.
        assert_eq!(words("abc漢def"), 3);
        assert_eq!(words("I live in 東京 now"), 6);
        assert_eq!(words("gpt東京gpt"), 4);
        // Hangul is written with spaces: a Korean word is one word.
        assert_eq!(words("안녕하세요 세계"), 2);
        // Fullwidth punctuation is not CJK: it joins a word.
        assert_eq!(words("東京。"), 3);
        // An emoji sequence, however many code points, is one word; so is a combining one.
        assert_eq!(
            words("\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466} \u{1F44D}\u{1F3FD} 1\u{FE0F}\u{20E3}"),
            3
        );
        assert_eq!(words("cafe\u{301} Vie\u{323}\u{302}t"), 2);
        assert_eq!(words("مرحبا بالعالم שלום"), 3);
    }

    proptest::proptest! {
        /// The ASCII shortcut counts as the rule stated a character at a time does.
        #[test]
        fn words_counts_as_the_rule_reads(s in "([ \t\n\u{b}\u{c}\r\u{1c}\u{85}\u{a0}\u{3000}a-z0-9.,!東京はカタ안é\u{301}👍\u{200d}]|\\PC){0,40}") {
            let mut n = 0;
            let mut in_word = false;
            for c in s.chars() {
                if c.is_whitespace() {
                    in_word = false;
                } else if is_cjk(c) {
                    n += 1;
                    in_word = false;
                } else if !in_word {
                    n += 1;
                    in_word = true;
                }
            }
            proptest::prop_assert_eq!(words(&s), n, "{:?}", s);
        }
    }

    #[test]
    fn without_cjk_the_word_rule_is_split_whitespace() {
        for s in [
            "a b  c",
            " lead and trail ",
            "tabs\tand\nnewlines\u{3000}ideographic space",
            "nbsp\u{A0}is whitespace too",
            "안녕 하세요",
            "\u{1F1EF}\u{1F1F5}\u{1F1FA}\u{1F1F8}",
        ] {
            assert_eq!(words(s), s.split_whitespace().count() as u64, "{s:?}");
        }
    }

    #[test]
    fn vocabularies_are_their_script() {
        for c in Charset::ALL {
            assert_eq!(c.vocabulary().len(), 32, "{c}");
            assert_eq!(c.name().parse::<Charset>(), Ok(c));
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::json!(c.name()));
            for u in c.vocabulary() {
                assert!(!u.is_empty() && !u.chars().any(char::is_whitespace), "{c}: {u:?}");
                let ok = match c {
                    Charset::Ascii => u.bytes().all(|b| b.is_ascii_lowercase()),
                    Charset::Cjk => u.chars().all(is_cjk),
                    Charset::Emoji => {
                        u.chars().any(|ch| ch as u32 >= 0x2000) && !u.chars().any(|ch| ch.is_alphabetic())
                    }
                    Charset::Rtl => u
                        .chars()
                        .all(|ch| ('\u{0590}'..='\u{05FF}').contains(&ch) || ('\u{0600}'..='\u{06FF}').contains(&ch)),
                    Charset::Combining => {
                        u.chars().any(|ch| ('\u{0300}'..='\u{036F}').contains(&ch))
                            // Nothing precomposed: no Latin-1 or Vietnamese letters with marks
                            // built in (đ has no decomposition, it is a letter of its own).
                            && !u.chars().any(|ch| {
                                (('\u{00C0}'..='\u{024F}').contains(&ch) && ch != '\u{111}')
                                    || ('\u{1E00}'..='\u{1EFF}').contains(&ch)
                            })
                    }
                };
                assert!(ok, "{c}: {u:?}");
                // One unit is as many words as it has CJK characters, else one.
                let want = if c == Charset::Cjk { u.chars().count() as u64 } else { 1 };
                assert_eq!(words(u), want, "{c}: {u:?}");
            }
        }
        let emoji = Charset::Emoji.vocabulary();
        assert!(emoji.iter().any(|u| u.contains('\u{200D}')), "ZWJ sequences");
        assert!(emoji.iter().any(|u| u.contains('\u{1F3FD}')), "skin tones");
        assert!(emoji.iter().any(|u| u.contains('\u{1F1EF}')), "flags");
        assert!(emoji.iter().any(|u| u.contains('\u{20E3}')), "keycaps");
        assert!(emoji.iter().filter(|u| u.chars().count() > 1).count() >= 16);
        assert!(Charset::Cjk.vocabulary().iter().any(|u| u.chars().count() == 1));
        assert!("klingon".parse::<Charset>().is_err());
    }
}
