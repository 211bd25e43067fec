//! JSON documents read in one pass over the text: each object is split into its top-level
//! fields as borrowed raw JSON (checked, not copied), `List` items recursively, so that the
//! kind can be looked at whatever the field order; a field is then decoded once, straight
//! into the typed object. No `serde_json::Value` tree is built.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::MapDeserializer;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::classify::{message, Document, Items, Undecoded};
use super::guard;

/// One JSON document or list item.
#[derive(Debug)]
pub(super) enum Doc<'de> {
    /// A mapping: its top-level fields in order (a repeated key keeps its last value).
    Object(Vec<(Cow<'de, str>, Field<'de>)>),
    /// Anything else (skipped).
    Other,
}

/// A top-level field of an object.
#[derive(Debug)]
pub(super) enum Field<'de> {
    /// Any field but `items`: the JSON text of its value.
    Raw(&'de RawValue),
    /// `items`, already split into documents.
    Items(Items<Doc<'de>>),
}

/// Parses a stream of JSON documents; on error returns the documents before it and the error
/// message with the number of the document it hit. Values nest at most as deep as
/// serde_json's recursion limit allows, with its message (checked by [`guard::json_too_deep`],
/// since raw fields are only scanned).
pub(super) fn json_stream(text: &str) -> (Vec<Doc<'_>>, Option<(usize, String)>) {
    let too_deep = guard::json_too_deep(text);
    let scanned = too_deep.map_or(text, |at| &text[..at]);
    let mut documents = Vec::new();
    for result in serde_json::Deserializer::from_str(scanned).into_iter::<Doc<'_>>() {
        match result {
            Ok(document) => documents.push(document),
            Err(_) => {
                // Scanning a value reports some errors at another place than parsing it (a
                // control character in a string: after it, not before), so the error is taken
                // from a full parse, as it always was; only bad input pays for it.
                let (parsed, err) = first_parse_error(scanned);
                documents.truncate(parsed);
                let reason = match (too_deep, err) {
                    (Some(at), Some(err)) if err.is_eof() => guard::recursion_message(text, at),
                    (_, Some(err)) => err.to_string(),
                    (Some(at), None) => guard::recursion_message(text, at),
                    (None, None) => "invalid JSON".to_string(),
                };
                return (documents, Some((parsed + 1, reason)));
            }
        }
    }
    if let Some(at) = too_deep {
        // Unreachable in practice (the cut text ends inside a value), kept for safety.
        let number = documents.len() + 1;
        return (documents, Some((number, guard::recursion_message(text, at))));
    }
    (documents, None)
}

/// How many documents of `text` parse as JSON values before the first error, and that error.
fn first_parse_error(text: &str) -> (usize, Option<serde_json::Error>) {
    let mut parsed = 0;
    for result in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>() {
        match result {
            Ok(_) => parsed += 1,
            Err(err) => return (parsed, Some(err)),
        }
    }
    (parsed, None)
}

impl<'de> Doc<'de> {
    fn raw(&self, key: &str) -> Option<&'de RawValue> {
        match self {
            Doc::Object(fields) => fields.iter().find_map(|(k, field)| match field {
                Field::Raw(raw) if k == key => Some(*raw),
                _ => None,
            }),
            Doc::Other => None,
        }
    }
}

impl Document for Doc<'_> {
    fn is_mapping(&self) -> bool {
        matches!(self, Doc::Object(_))
    }

    fn string(&self, key: &str) -> Option<Option<String>> {
        match self {
            Doc::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, field)| match field {
                Field::Raw(raw) => serde_json::from_str::<String>(raw.get()).ok(),
                Field::Items(_) => None,
            }),
            Doc::Other => None,
        }
    }

    fn has(&self, key: &str) -> bool {
        matches!(self, Doc::Object(fields) if fields.iter().any(|(k, _)| k == key))
    }

    fn take_items(&mut self) -> Items<Self> {
        let Doc::Object(fields) = self else {
            return Items::Null;
        };
        match fields.iter().position(|(k, _)| k == "items") {
            Some(at) => match fields.remove(at).1 {
                Field::Items(items) => items,
                Field::Raw(_) => Items::Null,
            },
            None => Items::Null,
        }
    }

    fn metadata_string(&self, key: &str) -> Option<String> {
        let metadata = self.raw("metadata")?;
        let value: serde_json::Value = serde_json::from_str(metadata.get()).ok()?;
        value.get(key)?.as_str().map(str::to_owned)
    }

    fn decode<T: DeserializeOwned>(self) -> Result<T, Undecoded> {
        let decoded = match &self {
            Doc::Object(fields) => {
                let fields = fields.iter().filter_map(|(key, field)| match field {
                    Field::Raw(raw) if key != "apiVersion" && key != "kind" => Some((key.as_ref(), *raw)),
                    _ => None,
                });
                T::deserialize(MapDeserializer::<_, serde_json::Error>::new(fields)).map_err(|err| message(&err))
            }
            Doc::Other => Err("not a mapping".into()),
        };
        // The names are only looked up for the message.
        decoded.map_err(|reason| Undecoded {
            reason,
            name: self.metadata_string("name"),
            namespace: self.metadata_string("namespace"),
        })
    }
}

/// An object key, borrowed from the text unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Doc<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocVisitor)
    }
}

struct DocVisitor;

impl<'de> Visitor<'de> for DocVisitor {
    type Value = Doc<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: Vec<(Cow<'de, str>, Field<'de>)> = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            let field = if key == "items" { Field::Items(map.next_value()?) } else { Field::Raw(map.next_value()?) };
            match fields.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = field,
                None => fields.push((key, field)),
            }
        }
        Ok(Doc::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Doc::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Doc::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Doc::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Doc::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Doc::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Doc::Other)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Doc::Other)
    }
}

impl<'de> Deserialize<'de> for Items<Doc<'de>> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemsVisitor)
    }
}

struct ItemsVisitor;

impl<'de> Visitor<'de> for ItemsVisitor {
    type Value = Items<Doc<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Items::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Items::Not("a mapping"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Items::Not("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Items::Not("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Items::Not("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Items::Not("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Items::Not("a string"))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Items::Null)
    }
}
