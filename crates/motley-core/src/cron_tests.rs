use super::*;

fn ms(rfc3339: &str) -> u64 {
    let t: Timestamp = rfc3339.parse().expect("a timestamp");
    u64::try_from(t.as_millisecond()).expect("after 1970")
}

fn next(expr: &str, zone_name: Option<&str>, after: &str) -> String {
    let c = Cron::parse(expr).expect("parses");
    let tz = zone(zone_name).expect("zone");
    let at = c.next_after(ms(after), &tz).expect("a next time");
    let t = Timestamp::from_millisecond(at as i64).expect("ts");
    t.to_zoned(tz).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

#[test]
fn five_fields_fire_on_the_minute() {
    assert_eq!(
        next("*/15 * * * *", None, "2026-12-06T10:07:30Z"),
        "2026-12-06T10:15:00+00:00"
    );
    assert_eq!(
        next("0 3 * * *", None, "2026-12-06T03:00:00Z"),
        "2026-12-07T03:00:00+00:00"
    );
    assert_eq!(
        next("0 3 * * *", None, "2026-12-06T02:59:59.999Z"),
        "2026-12-06T03:00:00+00:00"
    );
    assert_eq!(
        next("@hourly", None, "2026-12-06T10:00:00Z"),
        "2026-12-06T11:00:00+00:00"
    );
    assert_eq!(
        next("@yearly", None, "2026-12-06T10:00:00Z"),
        "2027-01-01T00:00:00+00:00"
    );
}

#[test]
fn six_fields_have_seconds_first() {
    assert_eq!(
        next("*/5 * * * * *", None, "2026-12-06T10:07:31Z"),
        "2026-12-06T10:07:35+00:00"
    );
    assert_eq!(
        next("30 0 12 * * *", None, "2026-12-06T12:00:31Z"),
        "2026-12-07T12:00:30+00:00"
    );
}

#[test]
fn names_ranges_lists_and_steps() {
    // Weekdays at 09:30: from Saturday to Monday.
    assert_eq!(
        next("30 9 * * mon-fri", None, "2026-12-05T12:00:00Z"),
        "2026-12-07T09:30:00+00:00"
    );
    // Sunday as 7.
    assert_eq!(
        next("0 0 * * 7", None, "2026-12-05T12:00:00Z"),
        "2026-12-06T00:00:00+00:00"
    );
    assert_eq!(
        next("0 0 1 jan,jul *", None, "2026-12-05T12:00:00Z"),
        "2027-01-01T00:00:00+00:00"
    );
    assert_eq!(
        next("0 8-18/4 * * *", None, "2026-12-06T12:00:00Z"),
        "2026-12-06T16:00:00+00:00"
    );
    assert_eq!(
        next("0 20/2 * * *", None, "2026-12-06T21:00:00Z"),
        "2026-12-06T22:00:00+00:00"
    );
}

#[test]
fn both_day_fields_restricted_match_either() {
    // The 1st of the month or any Friday: from Sunday 6 December 2026, Friday the 11th.
    assert_eq!(
        next("0 0 1 * fri", None, "2026-12-06T00:00:00Z"),
        "2026-12-11T00:00:00+00:00"
    );
    // Only the day of month restricted: the 29th of February, next in 2028.
    assert_eq!(
        next("0 0 29 2 *", None, "2026-12-06T00:00:00Z"),
        "2028-02-29T00:00:00+00:00"
    );
}

#[test]
fn a_day_that_never_comes_has_no_next_time() {
    let c = Cron::parse("0 0 30 2 *").expect("parses");
    assert_eq!(
        c.next_after(ms("2026-01-01T00:00:00Z"), &TimeZone::UTC),
        None
    );
}

#[test]
fn a_time_zone_moves_the_wall_clock() {
    assert_eq!(
        next("0 3 * * *", Some("Europe/Berlin"), "2026-12-06T12:00:00Z"),
        "2026-12-07T03:00:00+01:00"
    );
    assert_eq!(
        next(
            "0 3 * * *",
            Some("America/New_York"),
            "2026-07-01T12:00:00Z"
        ),
        "2026-07-02T03:00:00-04:00"
    );
}

#[test]
fn a_time_in_the_spring_gap_fires_after_it() {
    // Europe/Berlin skips 02:00-03:00 on 29 March 2026: 02:30 fires at 03:30 CEST.
    assert_eq!(
        next("30 2 * * *", Some("Europe/Berlin"), "2026-03-28T12:00:00Z"),
        "2026-03-29T03:30:00+02:00"
    );
    // And the next day as usual.
    assert_eq!(
        next("30 2 * * *", Some("Europe/Berlin"), "2026-03-29T01:30:00Z"),
        "2026-03-30T02:30:00+02:00"
    );
}

#[test]
fn a_time_that_happens_twice_fires_once() {
    // Europe/Berlin repeats 02:00-03:00 on 25 October 2026: 02:30 fires at the first.
    let c = Cron::parse("30 2 * * *").expect("parses");
    let tz = zone(Some("Europe/Berlin")).expect("zone");
    let first = c.next_after(ms("2026-10-24T12:00:00Z"), &tz).expect("next");
    assert_eq!(first, ms("2026-10-25T00:30:00Z"), "02:30 CEST");
    let second = c.next_after(first, &tz).expect("next");
    assert_eq!(
        second,
        ms("2026-10-26T01:30:00Z"),
        "the next day, 02:30 CET"
    );
    // Every 15 minutes through the repeated hour: each wall-clock time once.
    let c = Cron::parse("*/15 * * * *").expect("parses");
    let mut t = ms("2026-10-24T23:50:00Z");
    let mut seen = Vec::new();
    while t < ms("2026-10-25T02:10:00Z") {
        t = c.next_after(t, &tz).expect("next");
        seen.push(t);
    }
    let times: Vec<String> = seen
        .iter()
        .map(|t| {
            Timestamp::from_millisecond(*t as i64)
                .expect("ts")
                .to_zoned(tz.clone())
                .strftime("%H:%M%:z")
                .to_string()
        })
        .collect();
    assert_eq!(
        times,
        [
            "02:00+02:00",
            "02:15+02:00",
            "02:30+02:00",
            "02:45+02:00",
            "03:00+01:00",
            "03:15+01:00"
        ]
    );
}

#[test]
fn bad_expressions_say_what_is_wrong() {
    for (expr, says) in [
        ("* * * *", "4 fields"),
        ("61 * * * *", "minute 61 is out of range 0-59"),
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 0 0 * *", "day of month 0 is out of range 1-31"),
        ("0 0 * 13 *", "month 13 is out of range 1-12"),
        ("0 0 * * 8", "day of week 8 is out of range 0-7"),
        ("0 0 * * funday", "day of week \"funday\" is not a number"),
        (
            "*/0 * * * *",
            "minute step \"0\" must be a number of at least 1",
        ),
        ("5-1 * * * *", "minute range \"5-1\" runs backwards"),
        ("1,,2 * * * *", "minute: an empty item"),
        ("@fortnightly", "not a known shorthand"),
        ("60 * * * * *", "second 60 is out of range 0-59"),
    ] {
        match Cron::parse(expr) {
            Ok(c) => panic!("{expr:?} parsed: {c:?}"),
            Err(e) => assert!(e.contains(says), "{expr:?}: {e}"),
        }
    }
    match zone(Some("Mars/Olympus_Mons")) {
        Ok(z) => panic!("a zone: {z:?}"),
        Err(e) => assert!(e.contains("not known"), "{e}"),
    }
}
