//! Embedded redb store (filled in by the store work).
