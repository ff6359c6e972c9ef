//! Open word sets: the enums of fields whose known words rigmind acts on, while a
//! file written by hand or by a newer version may hold another word that must be
//! kept as it was (see docs/queue-layout.md, "Typed fields").

/// Declares an enum of known words plus `Other(String)` for any other word, written
/// and read as the plain string: `as_str`, `From<&str>`, `Display`, serde.
#[macro_export]
macro_rules! open_words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A word this version does not know, kept as it was written.
            Other(String),
        }

        impl $name {
            /// The word as written in files.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )*
                    Self::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $text => Self::$variant, )*
                    other => Self::Other(other.to_string()),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                Ok(Self::from(s.as_str()))
            }
        }
    };
}

open_words! {
    /// A task file's `type` (queue-layout.md): derived from the class when rigmind
    /// writes the file; nothing decides on it, so a hand-written word is kept.
    #[derive(Default)]
    pub enum TaskType {
        /// No `type` in the file (written as `""`).
        #[default]
        Unset = "",
        /// A `cpu` or `script` task.
        Shell = "shell",
        Llm = "llm",
        Resource = "resource",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_ones_are_kept() {
        for (t, text) in [
            (TaskType::Unset, "\"\""),
            (TaskType::Shell, "\"shell\""),
            (TaskType::Other("bash".into()), "\"bash\""),
        ] {
            assert_eq!(serde_json::to_string(&t).unwrap(), text);
            assert_eq!(serde_json::from_str::<TaskType>(text).unwrap(), t);
        }
    }
}
