//! Small helpers every module uses: poison-tolerant locks and the clock. A leaf: it
//! imports nothing from this crate.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Milliseconds since the Unix epoch (the simulator's virtual clock under `motley-sim`).
pub fn now_ms() -> u64 {
    motley_rt::now_ms()
}

/// Read-locks, ignoring poisoning (see [`lock`]).
pub fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Write-locks, ignoring poisoning (see [`lock`]).
pub fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Locks a mutex, recovering from poisoning (a panicked holder leaves consistent data here).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
