//! A machine's hours (`motley capacity --schedule "gpu-box: 01:00-06:00"`, issue 24):
//! a daily window in which it runs, and what waiting for it costs work that only it can
//! take.

/// Minutes in a day.
pub const DAY_MIN: u32 = 24 * 60;

/// A daily window, `start` to `end` in minutes after midnight (`end` before `start`:
/// it runs over midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Opens, minutes after midnight.
    pub start: u32,
    /// Closes.
    pub end: u32,
}

fn hhmm(s: &str) -> Result<u32, String> {
    let (h, m) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected HH:MM"))?;
    let h: u32 = h
        .parse()
        .map_err(|_| format!("{s:?}: hours are not a number"))?;
    let m: u32 = m
        .parse()
        .map_err(|_| format!("{s:?}: minutes are not a number"))?;
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(format!("{s:?}: not a time of day"));
    }
    Ok(h * 60 + m)
}

impl Window {
    /// `01:00-06:00`; `22:00-06:00` runs over midnight. Refused: a window of no time.
    pub fn parse(s: &str) -> Result<Window, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?}: expected HH:MM-HH:MM"))?;
        let w = Window {
            start: hhmm(a)? % DAY_MIN,
            end: hhmm(b)? % DAY_MIN,
        };
        if w.start == w.end {
            return Err(format!(
                "{s:?}: the window is empty (or all day: then give none)"
            ));
        }
        Ok(w)
    }

    /// Minutes a day it runs.
    pub fn on_minutes(&self) -> u32 {
        (self.end + DAY_MIN - self.start) % DAY_MIN
    }

    /// Minutes a day it is off.
    pub fn off_minutes(&self) -> u32 {
        DAY_MIN - self.on_minutes()
    }

    /// The longest a piece of work that only this machine takes waits: submitted
    /// just after the window closed, ms.
    pub fn worst_wait_ms(&self) -> u64 {
        u64::from(self.off_minutes()) * 60_000
    }

    /// The mean wait of such work submitted at a uniformly random time of day: it waits
    /// only when submitted while off, on average half the off time, ms.
    pub fn mean_wait_ms(&self) -> u64 {
        let off = u64::from(self.off_minutes());
        off * off * 60_000 / (2 * u64::from(DAY_MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_their_waits() {
        let w = Window::parse("01:00-06:00").expect("a window");
        assert_eq!((w.on_minutes(), w.off_minutes()), (300, 1140));
        assert_eq!(w.worst_wait_ms(), 19 * 3_600_000);
        // 19 h off of 24: waits 19/24 of the time, 9.5 h on average then: 7.52 h.
        assert_eq!(w.mean_wait_ms(), 1140 * 1140 * 60_000 / 2880);
        let night = Window::parse("22:00-06:00").expect("over midnight");
        assert_eq!(night.on_minutes(), 480);
        assert_eq!(
            Window::parse("00:00-24:00").map(|w| w.on_minutes()),
            Err("\"00:00-24:00\": the window is empty (or all day: then give none)".into())
        );
        for bad in ["1-6", "25:00-01:00", "01:60-02:00", "06:00", "a:b-c:d"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }
}
