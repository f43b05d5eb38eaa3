//! Deserialisers for Docker's JSON habits: `null` for empty lists and maps, and a command
//! that may be a string or a list (Go's `strslice`).

use serde::{Deserialize, Deserializer};

/// `null` (or a missing field, with `#[serde(default)]`) becomes `T::default()`.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `"ls -l"`, `["ls", "-l"]` or `null`. A string is one word, as Docker's strslice reads it.
pub fn str_or_list<'de, D>(d: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StrOrList {
        Str(String),
        List(Vec<String>),
    }
    Ok(match Option::<StrOrList>::deserialize(d)? {
        None => Vec::new(),
        Some(StrOrList::Str(s)) => vec![s],
        Some(StrOrList::List(l)) => l,
    })
}
