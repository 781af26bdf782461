//! `word-count`: a stateful word count.
//!
//! Each value is split into words (maximal runs of Unicode alphanumeric
//! characters, lowercased; a value that is not UTF-8 is read lossily). The
//! state holds one entry per word: key = the word, value = its count as
//! decimal text. For each distinct word of an event, in order of first
//! appearance, the processor adds the word's occurrences in the event to its
//! count and emits (key = word, value = new count as decimal text) to the
//! first declared output. Tombstones and values without words emit nothing.
//!
//! Like all state in Leat, the counts belong to the input partition: a word
//! seen on two partitions has two counts. Key the input by word (or count
//! the outputs of a stream keyed by word) for one count per word.

use std::collections::HashMap;

use leat_sdk::{Config, Context, Error, Event, Output, Processor};

/// The processor. The counts live in the state, not here.
pub struct WordCount;

/// The lowercased words of `text` with their number of occurrences, in
/// order of first appearance.
fn words(text: &str) -> Vec<(String, u64)> {
    let mut counted: Vec<(String, u64)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_lowercase();
        match index.get(&word) {
            Some(&i) => counted[i].1 += 1,
            None => {
                index.insert(word.clone(), counted.len());
                counted.push((word, 1));
            }
        }
    }
    counted
}

/// Reads a word's count from the state.
fn stored_count(ctx: &Context<'_>, word: &str) -> Result<u64, Error> {
    let Some(bytes) = ctx.get(word) else {
        return Ok(0);
    };
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::new(format!("the state of word {word:?} is not a decimal count")))
}

impl Processor for WordCount {
    fn init(config: &Config) -> Result<Self, Error> {
        if config.outputs().is_empty() {
            return Err(Error::new("word-count needs an output stream"));
        }
        Ok(WordCount)
    }

    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
        let Some(value) = event.value() else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(value);
        for (word, seen) in words(&text) {
            let count = stored_count(ctx, &word)?.saturating_add(seen);
            let count = count.to_string();
            ctx.put(&word, &count);
            ctx.emit(Output::new().key(word).value(count))?;
        }
        Ok(())
    }
}

leat_sdk::export!(WordCount);

#[cfg(test)]
mod tests {
    use super::*;
    use leat_sdk::testing::TestHost;

    fn setup() -> (TestHost, WordCount) {
        let host = TestHost::new().with_outputs(["counts"]);
        let p = host.init(&[]).unwrap();
        (host, p)
    }

    fn line(text: &str) -> Event {
        Event::new("text").with_value(text)
    }

    fn pairs(out: &[Output]) -> Vec<(&str, &str)> {
        out.iter()
            .map(|o| (o.key_str().unwrap(), o.value_str().unwrap()))
            .collect()
    }

    #[test]
    fn splitting_lowercases_and_groups_words() {
        assert_eq!(
            words("The cat, the HAT; the end!"),
            [
                ("the".to_string(), 3),
                ("cat".to_string(), 1),
                ("hat".to_string(), 1),
                ("end".to_string(), 1)
            ]
        );
        assert_eq!(words("  ...  "), []);
        assert_eq!(
            words("Élan élan 42"),
            [("élan".into(), 2), ("42".into(), 1)]
        );
    }

    #[test]
    fn counts_accumulate_in_the_state_across_batches() {
        let (mut host, mut p) = setup();
        let out = host
            .run(&mut p, &[line("apple pear"), line("Apple")])
            .unwrap();
        assert_eq!(pairs(&out), [("apple", "1"), ("pear", "1"), ("apple", "2")]);
        assert_eq!(out[2].caused_by(), Some(1));
        let out = host.run(&mut p, &[line("pear pear apple")]).unwrap();
        assert_eq!(pairs(&out), [("pear", "3"), ("apple", "3")]);
        assert_eq!(host.state_value("pear"), Some(&b"3"[..]));
        assert_eq!(host.state().len(), 2);
    }

    #[test]
    fn tombstones_and_empty_values_emit_nothing() {
        let (mut host, mut p) = setup();
        let out = host
            .run(&mut p, &[Event::new("text").with_key("k"), line(" - ")])
            .unwrap();
        assert!(out.is_empty());
        assert!(host.state().is_empty());
    }

    #[test]
    fn a_corrupt_count_fails_the_event() {
        let (mut host, mut p) = setup();
        host.state_mut().insert(b"fig".to_vec(), b"many".to_vec());
        let failure = host.run(&mut p, &[line("kiwi"), line("fig")]).unwrap_err();
        assert_eq!(failure.event_index, Some(1));
        assert!(
            host.state_value("kiwi").is_none(),
            "the batch was rolled back"
        );
    }

    #[test]
    fn non_utf8_values_are_read_lossily() {
        let (mut host, mut p) = setup();
        let e = Event::new("text").with_value(b"ab\xffcd".to_vec());
        let out = host.run(&mut p, &[e]).unwrap();
        assert_eq!(pairs(&out), [("ab", "1"), ("cd", "1")]);
    }
}
