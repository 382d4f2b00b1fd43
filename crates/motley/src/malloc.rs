//! The C allocator's settings: one arena for every command, free pages given back in
//! the long-running roles (server, agent, `up`).
//!
//! glibc gives each thread that allocates its own arena, up to eight per core, and an
//! arena is never given back: an idle agent that once ran its eight blocking threads
//! (file and process work) kept ten arenas of 24–124 KiB each, a third of its private
//! memory (docs/decisions.md, "One malloc arena"). One arena keeps freed memory in one
//! place for the next allocation of any thread; each thread's cache of small chunks
//! (glibc's tcache) still serves most allocations without the arena's lock.

/// Limits the C allocator to one arena. Called first thing in `main`, before any
/// thread starts; a no-op where the C library is not glibc (musl has no arenas).
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` changes a setting of glibc's allocator; it takes plain integers,
    // keeps no pointer, and is safe to call from any thread at any time (it takes the
    // main arena's lock). Its result (1 on success) needs no handling: on failure the
    // allocator keeps its default.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Whether the command line names a role that runs for long (`up`, `server`, `agent`):
/// those parse on a thread of their own and give the parse's memory back. A guess from
/// the first words, made before parsing: a wrong guess costs a thread and a trim, or
/// leaves a role with the parse's pages, nothing else.
pub fn names_a_long_running_role(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.skip(1)
        .take(4)
        .any(|a| a == "up" || a == "server" || a == "agent")
}

/// How often a long-running role gives free pages back (`give_back_periodically`).
pub const GIVE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Gives free pages back every [`GIVE_BACK_EVERY`], for as long as the role runs. glibc
/// returns memory on its own only from the top of the heap, so a burst (an apply of
/// thousands of replicas, a large answer, many starts) left its peak resident with the
/// data long freed: a server with 1,000 simulated nodes held 68–69 MiB without this and
/// 56–58 MiB with it, at the same CPU (docs/BENCHMARKS.md, seventh stop). On an idle
/// agent's small heap it changes nothing measurable (its free chunks are mostly smaller
/// than a page). A trim walks the allocator's free lists under its lock.
pub async fn give_back_periodically() {
    let mut every = tokio::time::interval_at(
        tokio::time::Instant::now() + GIVE_BACK_EVERY,
        GIVE_BACK_EVERY,
    );
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        give_back_free_pages();
    }
}

/// Gives the pages of freed memory back to the system (`malloc_trim`), wherever in the
/// heap they are: after the command line's parse, whose description of every subcommand
/// was the largest thing an idle agent ever allocated, the heap kept those pages.
pub fn give_back_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` walks glibc's own free lists under the arena's lock and
    // releases whole free pages; it takes a size and keeps no pointer.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::names_a_long_running_role;
    use std::ffi::OsString;

    fn args(line: &str) -> impl Iterator<Item = OsString> {
        line.split(' ')
            .map(OsString::from)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn the_long_running_roles_are_told_apart_from_client_commands() {
        for line in [
            "motley up",
            "motley server --data-dir /var/lib/motley",
            "motley agent --server https://a:7443 --token t",
            "motley --config c.yaml agent --server https://a:7443",
        ] {
            assert!(names_a_long_running_role(args(line)), "{line}");
        }
        for line in [
            "motley",
            "motley get jobs",
            "motley apply -f job.yaml",
            "motley --config c.yaml get services",
            "motley logs web --follow",
        ] {
            assert!(!names_a_long_running_role(args(line)), "{line}");
        }
    }
}
