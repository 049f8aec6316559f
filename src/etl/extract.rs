//! The offline keyword extractor: RAKE-style candidate phrases, no model, deterministic.
//!
//! Candidates are runs of 1–3 words between stopwords, generic sentiment words ("great",
//! "love", "product") and punctuation; each is scored by the RAKE word score
//! (degree / frequency, summed over its words). Kept: lower case, de-duplicated, best first.
//! Stopwords deliberately include "for", "my", "after", so that who/when/why context surfaces as
//! its content words: "for my daughter" → `daughter`, "dry winter skin" stays whole.

use std::collections::HashMap;

/// How many keywords a review keeps at most.
pub const MAX_KEYWORDS: usize = 20;
/// Longest candidate phrase, in words.
const MAX_PHRASE_WORDS: usize = 3;

const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "absolutely",
    "after",
    "again",
    "against",
    "all",
    "already",
    "also",
    "always",
    "am",
    "an",
    "and",
    "any",
    "are",
    "aren't",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "bit",
    "both",
    "bought",
    "but",
    "buy",
    "by",
    "can",
    "can't",
    "cannot",
    "could",
    "couldn't",
    "definitely",
    "did",
    "didn't",
    "do",
    "does",
    "doesn't",
    "doing",
    "don't",
    "down",
    "during",
    "each",
    "even",
    "ever",
    "every",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "got",
    "had",
    "hadn't",
    "has",
    "hasn't",
    "have",
    "haven't",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "however",
    "i",
    "i'd",
    "i'll",
    "i'm",
    "i've",
    "if",
    "in",
    "into",
    "is",
    "isn't",
    "it",
    "it's",
    "its",
    "itself",
    "just",
    "let's",
    "like",
    "liked",
    "likes",
    "little",
    "looking",
    "lot",
    "made",
    "make",
    "makes",
    "many",
    "me",
    "more",
    "most",
    "much",
    "my",
    "myself",
    "need",
    "needed",
    "never",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "one",
    "only",
    "or",
    "order",
    "ordered",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "pretty",
    "put",
    "quite",
    "really",
    "same",
    "she",
    "should",
    "since",
    "so",
    "some",
    "something",
    "still",
    "such",
    "sure",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "this",
    "those",
    "though",
    "through",
    "to",
    "too",
    "tried",
    "try",
    "two",
    "under",
    "until",
    "up",
    "use",
    "used",
    "uses",
    "using",
    "usually",
    "very",
    "was",
    "wasn't",
    "way",
    "we",
    "well",
    "were",
    "weren't",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "won't",
    "would",
    "wouldn't",
    "yet",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// Generic sentiment and shopping words: true of any product, useless for retrieval.
const GENERIC: &[&str] = &[
    "advertised",
    "again",
    "amazing",
    "arrived",
    "awesome",
    "awful",
    "bad",
    "best",
    "better",
    "buying",
    "cheap",
    "described",
    "difference",
    "disappointed",
    "disappointing",
    "disappointment",
    "exactly",
    "excellent",
    "expected",
    "experience",
    "fantastic",
    "fast",
    "favorite",
    "favourite",
    "finally",
    "fine",
    "five",
    "four",
    "glad",
    "goes",
    "good",
    "great",
    "happy",
    "highly",
    "horrible",
    "item",
    "items",
    "job",
    "letdown",
    "love",
    "loved",
    "loves",
    "meh",
    "money",
    "money's",
    "new",
    "nice",
    "nothing",
    "ok",
    "okay",
    "overall",
    "perfect",
    "perfectly",
    "poor",
    "price",
    "product",
    "products",
    "purchase",
    "purchased",
    "quality",
    "quickly",
    "real",
    "received",
    "recommend",
    "recommended",
    "return",
    "returned",
    "review",
    "reviews",
    "shipping",
    "star",
    "stars",
    "stuff",
    "tell",
    "terrible",
    "three",
    "time",
    "times",
    "value",
    "waste",
    "wonderful",
    "work",
    "worked",
    "working",
    "works",
    "worst",
    "worth",
    "wow",
];

fn is_stop(w: &str) -> bool {
    STOPWORDS.binary_search(&w).is_ok() || GENERIC.binary_search(&w).is_ok()
}

/// Lower-cased word runs between delimiters. A token keeps letters, digits, inner `-`/`'`,
/// and `.` between digits (`1.7`); a trailing `'s` is dropped (`daughter's` → `daughter`).
fn runs(text: &str) -> Vec<Vec<String>> {
    let lower = text.to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Vec<String>>| {
        let trimmed = word.trim_matches(|c| c == '-' || c == '\'');
        // A possessive ends a phrase: "daughter's curly hair" → "daughter" | "curly hair".
        let possessive = trimmed.ends_with("'s");
        let w = trimmed.trim_end_matches("'s").to_string();
        word.clear();
        if w.is_empty() {
            return;
        }
        if is_stop(&w) || !w.chars().any(|c| c.is_alphanumeric()) {
            out.push(Vec::new());
        } else {
            out.last_mut().expect("non-empty").push(w);
            if possessive {
                out.push(Vec::new());
            }
        }
    };
    for (i, &c) in chars.iter().enumerate() {
        let digit_dot = c == '.'
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c.is_alphanumeric() || c == '-' || c == '\'' || c == '’' || digit_dot {
            word.push(if c == '’' { '\'' } else { c });
        } else {
            flush(&mut word, &mut out);
            if !c.is_whitespace() {
                out.push(Vec::new()); // punctuation ends a phrase
            }
        }
    }
    flush(&mut word, &mut out);
    out.retain(|r| !r.is_empty());
    out
}

/// Keywords of one review (title and text together), best first, at most `max`.
pub fn extract(title: &str, text: &str, max: usize) -> Vec<String> {
    let mut phrases: Vec<Vec<String>> = Vec::new();
    for run in runs(&format!("{title}. {text}")) {
        // Long runs are cut into phrases of at most three words, aligned on the run's end,
        // where English puts the head noun ("gentle daily curl cream" → "daily curl cream", "gentle").
        let mut end = run.len();
        while end > 0 {
            let start = end.saturating_sub(MAX_PHRASE_WORDS);
            phrases.push(run[start..end].to_vec());
            end = start;
        }
    }
    let mut freq: HashMap<&str, f64> = HashMap::new();
    let mut degree: HashMap<&str, f64> = HashMap::new();
    for p in &phrases {
        for w in p {
            *freq.entry(w).or_default() += 1.0;
            *degree.entry(w).or_default() += p.len() as f64;
        }
    }
    let mut scored: Vec<(String, f64, usize)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (order, p) in phrases.iter().enumerate() {
        // Lone one- or two-character tokens ("x", "oz") carry nothing on their own.
        if p.len() == 1 && p[0].chars().count() <= 2 {
            continue;
        }
        let score: f64 = p
            .iter()
            .map(|w| degree[w.as_str()] / freq[w.as_str()])
            .sum();
        let phrase = p.join(" ");
        match seen.get(&phrase) {
            Some(&i) => scored[i].1 = scored[i].1.max(score),
            None => {
                seen.insert(phrase.clone(), scored.len());
                scored.push((phrase, score, order));
            }
        }
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    scored.into_iter().take(max).map(|(p, _, _)| p).collect()
}

/// The content words of a phrase (stopwords and generic words removed), joined by spaces:
/// how a ground-truth phrase like "after the gym" is compared with keywords ("gym").
pub fn content_words(phrase: &str) -> String {
    runs(phrase)
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_lists_are_sorted_for_binary_search() {
        assert!(
            STOPWORDS.windows(2).all(|w| w[0] < w[1]),
            "STOPWORDS unsorted"
        );
        assert!(GENERIC.windows(2).all(|w| w[0] < w[1]), "GENERIC unsorted");
    }

    #[test]
    fn who_when_why_context_surfaces() {
        let k = extract(
            "Great for thin hair",
            "I bought this for my daughter's curly hair. I use it after the gym, perfect for dry winter skin!",
            MAX_KEYWORDS,
        );
        for want in [
            "thin hair",
            "daughter",
            "curly hair",
            "gym",
            "dry winter skin",
        ] {
            assert!(k.iter().any(|x| x == want), "{want:?} missing from {k:?}");
        }
    }

    #[test]
    fn generic_sentiment_is_removed_and_output_is_lowercase_unique() {
        let k = extract(
            "Love it! Great product",
            "Great product, love love LOVE the Lavender Scent. Lavender scent!",
            20,
        );
        assert_eq!(k, vec!["lavender scent".to_string()]);
    }

    #[test]
    fn phrases_have_at_most_three_words_and_max_is_respected() {
        let k = extract("", "gentle daily hydrating curl defining cream works", 20);
        assert!(k.iter().all(|p| p.split(' ').count() <= 3), "{k:?}");
        assert!(k.contains(&"curl defining cream".to_string()), "{k:?}");
        let many = (0..50)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(extract("", &many, 20).len(), 20);
    }

    #[test]
    fn sizes_keep_their_decimal_point() {
        let k = extract("", "The 1.7 oz bottle, vitamin c serum", 20);
        assert!(k.iter().any(|p| p.contains("1.7 oz")), "{k:?}");
        assert!(k.iter().any(|p| p == "vitamin c serum"), "{k:?}");
    }

    #[test]
    fn empty_text_gives_no_keywords() {
        assert!(extract("", "", 20).is_empty());
        assert!(extract("Five Stars", "", 20).is_empty());
    }

    #[test]
    fn content_words_drop_stopwords() {
        assert_eq!(content_words("after the gym"), "gym");
        assert_eq!(content_words("a birthday gift"), "birthday gift");
    }
}
