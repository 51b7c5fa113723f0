//! `Serialize` and `Deserialize` for [`BiasedArc`] and [`Weak`] (feature `serde`), as serde's
//! `rc` feature gives `Arc` and `sync::Weak`.
//!
//! A `BiasedArc<T>` serializes as its value, and deserializes into a new allocation owned by the
//! deserializing thread (`BiasedArc<str>` and `BiasedArc<[T]>` too, through a `String` or a
//! `Vec<T>`; other unsized values only serialize). As with `Arc`, sharing is not preserved: two
//! handles to one value serialize as two copies and come back as two allocations. A `Weak<T>`
//! serializes as `Option<T>` (the value if it still upgrades) and deserializes as a [`Weak::new`]
//! handle, since nothing would keep a freshly deserialized value alive.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{BiasedArc, Weak};

impl<T: ?Sized + Serialize> Serialize for BiasedArc<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        T::serialize(self, serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for BiasedArc<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(BiasedArc::new)
    }
}

impl<T: ?Sized + Serialize> Serialize for Weak<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.upgrade().serialize(serializer)
    }
}

// Unsized values deserialize through their owned forms, as serde's `Box<str>` and `Box<[T]>`
// impls do. (A sized `T` is read straight into the new allocation, where serde's `Arc<T>` goes
// through a `Box<T>`.)
impl<'de> Deserialize<'de> for BiasedArc<str> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(BiasedArc::from)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for BiasedArc<[T]> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(deserializer).map(BiasedArc::from)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Weak<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(deserializer).map(|_| Weak::new())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::{BiasedArc, Weak};

    #[test]
    fn a_biased_arc_round_trips_as_its_value() {
        let value = BiasedArc::new(vec![1, 2, 3]);
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(json, "[1,2,3]");
        let back: BiasedArc<Vec<i32>> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, value);
        assert!(
            !BiasedArc::ptr_eq(&back, &value),
            "sharing is not preserved"
        );
    }

    #[test]
    fn unsized_values_round_trip_as_their_values() {
        let text = BiasedArc::<str>::from("text");
        assert_eq!(serde_json::to_string(&text).unwrap(), "\"text\"");
        let back: BiasedArc<str> = serde_json::from_str("\"text\"").unwrap();
        assert_eq!(back, text);
        let numbers = BiasedArc::<[u8]>::from(vec![1, 2]);
        let json = serde_json::to_string(&numbers).unwrap();
        assert_eq!(json, "[1,2]");
        let back: BiasedArc<[u8]> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, numbers);
        let weak = BiasedArc::downgrade(&text);
        assert_eq!(serde_json::to_string(&weak).unwrap(), "\"text\"");
    }

    #[test]
    fn a_weak_handle_serializes_as_an_option_and_deserializes_empty() {
        let value = BiasedArc::new(7);
        let weak = BiasedArc::downgrade(&value);
        assert_eq!(serde_json::to_string(&weak).unwrap(), "7");
        drop(value);
        assert_eq!(serde_json::to_string(&weak).unwrap(), "null");
        let back: Weak<i32> = serde_json::from_str("7").unwrap();
        assert!(back.upgrade().is_none());
    }
}
