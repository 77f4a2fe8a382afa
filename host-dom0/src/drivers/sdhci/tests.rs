//! The SD state machine against the fake controller and card.

use super::fake::{csd, Card, FakeSdhci, State};
use super::*;

const SECTORS: usize = 4096; // 2 MiB

fn card(c: Card) -> SdCard<FakeSdhci> {
    match SdCard::init(FakeSdhci::new(Some(c)), Options::default()) {
        Ok(sd) => sd,
        Err((_, e)) => panic!("init failed: {e}"),
    }
}

fn pattern(sectors: usize, seed: u8) -> Vec<u8> {
    (0..sectors * 512).map(|i| (i as u8).wrapping_mul(7) ^ (i / 512) as u8 ^ seed).collect()
}

#[test]
fn sdhc_card_is_identified_in_the_specified_order() {
    let mut sd = card(Card::sdhc(SECTORS));
    let info = *sd.info().unwrap();
    assert!(info.high_capacity && info.v2);
    assert_eq!(info.rca, 0xb368);
    assert_eq!(info.sectors, SECTORS as u64);
    assert_eq!(&info.product_name(), b"FAKE1");
    assert!(!info.write_protected);
    assert_eq!(info.clock_hz, 13_000_000, "52 MHz base / (2 * 2): divider 1 would give 26 MHz, above the 25 asked");
    let host = sd.host();
    // CMD0, CMD8, then CMD55+ACMD41 until the card is no longer busy (3
    // busy answers), CID, RCA, CSD, select, 4-bit bus.
    assert_eq!(host.commands(), [0, 8, 55, 41, 55, 41, 55, 41, 55, 41, 2, 3, 9, 7, 55, 6]);
    assert!(host.log.iter().any(|&(app, i, arg)| app && i == 41 && arg == 0x40ff_8000), "ACMD41 asks for high capacity");
    assert!(host.log.iter().any(|&(app, i, arg)| app && i == 6 && arg == 2), "ACMD6 selects the 4-bit bus");
    assert!(host.bus_4bit(), "the controller's 4-bit mode follows");
    assert_eq!(host.card.as_ref().unwrap().state, State::Tran);
}

#[test]
fn clock_divider_never_exceeds_the_asked_rate() {
    assert_eq!(clock_divider(52_000_000, 400_000, true), (65, 400_000));
    assert_eq!(clock_divider(100_000_000, 25_000_000, true), (2, 25_000_000));
    assert_eq!(clock_divider(20_000_000, 25_000_000, true), (0, 20_000_000));
    let (n, hz) = clock_divider(52_000_000, 400_000, false);
    assert!(n.is_power_of_two() && hz <= 400_000, "v2 dividers are powers of two: {n} {hz}");
}

#[test]
fn csd_versions_give_the_capacity() {
    assert_eq!(csd_sectors(&csd(8 << 20, true)), Ok(8 << 20));
    assert_eq!(csd_sectors(&csd(131_072, false)), Ok(131_072));
    let mut bad = csd(1024, true);
    fake::set_bits(&mut bad, 127 - 8, 126 - 8, 2);
    assert!(csd_sectors(&bad).is_err());
}

#[test]
fn v1_standard_capacity_card_is_addressed_in_bytes() {
    let mut sd = card(Card::sdsc_v1(SECTORS));
    let info = *sd.info().unwrap();
    assert!(!info.high_capacity && !info.v2);
    let cmds = sd.host().commands();
    assert_eq!(cmds[..2], [0, 8], "CMD8 is tried; a 1.x card does not answer");
    assert!(cmds.contains(&16), "SET_BLOCKLEN 512 for a standard-capacity card");
    assert!(sd.host().log.iter().all(|&(app, i, arg)| !(app && i == 41) || arg & (1 << 30) == 0), "no HCS to a 1.x card");
    let data = pattern(1, 1);
    sd.write(7, &data).unwrap();
    assert_eq!(sd.host().sector(7), &data[..]);
    let &(_, i, arg) = sd.host().log.last().unwrap();
    assert_eq!((i, arg), (24, 7 * 512), "WRITE_BLOCK with a byte address");
}

#[test]
fn multi_block_writes_and_reads_round_trip_in_chunks_of_128() {
    let mut sd = card(Card::sdhc(SECTORS));
    sd.host().log.clear();
    let data = pattern(300, 9);
    sd.write(5, &data).unwrap();
    for s in 0..300u64 {
        assert_eq!(sd.host().sector(5 + s), &data[s as usize * 512..(s as usize + 1) * 512], "sector {}", 5 + s);
    }
    assert!(sd.host().sector(4).iter().all(|&b| b == 0) && sd.host().sector(305).iter().all(|&b| b == 0));
    let writes: Vec<_> = sd.host().log.iter().filter(|e| e.1 == 25).map(|e| e.2).collect();
    assert_eq!(writes, [5, 133, 261], "three WRITE_MULTIPLE_BLOCKs, block addressed");
    assert_eq!(sd.host().commands().iter().filter(|&&c| c == 12).count(), 3, "each stopped by auto CMD12");
    let mut back = vec![0u8; 300 * 512];
    sd.read(5, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(sd.host().card.as_ref().unwrap().state, State::Tran);
    // A single sector goes as READ_SINGLE_BLOCK.
    let mut one = [0u8; 512];
    sd.read(6, &mut one).unwrap();
    assert_eq!(&one[..], &data[512..1024]);
    assert_eq!(sd.host().log.last().unwrap().1, 17);
}

#[test]
fn flush_checks_the_card_is_back_in_transfer_state() {
    let mut sd = card(Card::sdhc(SECTORS));
    sd.write(0, &pattern(2, 3)).unwrap();
    sd.host().log.clear();
    sd.flush().unwrap();
    assert_eq!(sd.host().log, [(false, 13, 0xb368 << 16)], "SEND_STATUS to the card's RCA");
    sd.host().card = None;
    assert_eq!(sd.flush(), Err(SdError::CardRemoved), "a card that stopped answering");
    assert_eq!(sd.flush(), Err(SdError::CardRemoved));
}

#[test]
fn no_card_fails_initialisation_without_commands() {
    match SdCard::init(FakeSdhci::new(None), Options::default()) {
        Err((host, e)) => {
            assert_eq!(e, SdError::NoCard);
            assert!(host.log.is_empty());
        }
        Ok(_) => panic!("a card appeared"),
    }
}

#[test]
fn no_card_with_broken_card_detect_times_out_instead_of_hanging() {
    let opts = Options { broken_card_detect: true, ..Options::default() };
    match SdCard::init(FakeSdhci::new(None), opts) {
        Err((host, e)) => {
            assert!(matches!(e, SdError::CommandTimeout { .. }), "{e}");
            assert!(host.now < 10_000_000, "gave up within the bounds: {} µs", host.now);
        }
        Ok(_) => panic!("a card appeared"),
    }
}

#[test]
fn a_controller_whose_reset_never_finishes_is_reported() {
    let mut host = FakeSdhci::new(Some(Card::sdhc(SECTORS)));
    host.faults.reset_stuck = true;
    match SdCard::init(host, Options::default()) {
        Err((host, e)) => {
            assert_eq!(e, SdError::Controller("software reset did not finish"));
            assert!(host.now <= 200_000, "{} µs", host.now);
        }
        Ok(_) => panic!("initialised"),
    }
}

#[test]
fn a_card_that_stays_busy_is_unusable_after_the_power_up_timeout() {
    let mut c = Card::sdhc(SECTORS);
    c.busy_polls = u32::MAX;
    match SdCard::init(FakeSdhci::new(Some(c)), Options::default()) {
        Err((host, e)) => {
            assert!(matches!(e, SdError::Unusable(_)), "{e}");
            assert!(host.now < 3_000_000, "{} µs", host.now);
        }
        Ok(_) => panic!("initialised"),
    }
}

#[test]
fn command_timeout_is_an_error_and_the_next_request_works() {
    let mut sd = card(Card::sdhc(SECTORS));
    sd.write(40, &pattern(4, 5)).unwrap();
    sd.host().faults.cmd_timeout = Some(18);
    let mut buf = vec![0u8; 4 * 512];
    assert_eq!(sd.read(40, &mut buf), Err(SdError::CommandTimeout { cmd: 18 }));
    assert_eq!(sd.errors(), 1);
    sd.host().faults.cmd_timeout = None;
    sd.read(40, &mut buf).unwrap();
    assert_eq!(buf, pattern(4, 5));
}

#[test]
fn command_crc_error_is_reported_as_such() {
    let mut sd = card(Card::sdhc(SECTORS));
    sd.host().faults.cmd_crc = Some(24);
    assert!(matches!(sd.write(1, &[1; 512]), Err(SdError::CommandError { cmd: 24, status }) if status & 0x2 != 0));
    sd.host().faults.cmd_crc = None;
    sd.write(1, &[1; 512]).unwrap();
}

#[test]
fn data_crc_error_stops_the_transfer_and_the_card_recovers() {
    let mut sd = card(Card::sdhc(SECTORS));
    let data = pattern(8, 2);
    sd.write(100, &data).unwrap();
    sd.host().faults.data_crc_sector = Some(103);
    sd.host().log.clear();
    let mut buf = vec![0u8; 8 * 512];
    match sd.read(100, &mut buf) {
        Err(SdError::DataError { cmd: 18, status }) => assert!(status & (1 << 5) != 0, "data CRC bit: {status:#x}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sd.host().commands(), [18, 13, 12], "the read, a status check (card in the data state), a STOP_TRANSMISSION");
    assert_eq!(sd.host().card.as_ref().unwrap().state, State::Tran);
    sd.host().faults.data_crc_sector = None;
    sd.read(100, &mut buf).unwrap();
    assert_eq!(buf, data);
}

#[test]
fn a_silent_controller_times_out_within_the_bound() {
    let mut sd = card(Card::sdhc(SECTORS));
    sd.host().faults.silent = Some(25);
    let t0 = sd.host().now;
    assert_eq!(sd.write(0, &pattern(2, 0)), Err(SdError::CommandTimeout { cmd: 25 }));
    let took = sd.host().now - t0;
    assert!(took <= 3 * Timeouts::default().command, "{took} µs");
    sd.host().faults.silent = None;
    sd.write(0, &pattern(2, 0)).unwrap();
}

#[test]
fn buffer_never_ready_is_a_data_timeout() {
    let mut sd = card(Card::sdhc(SECTORS));
    sd.host().faults.write_stall = true;
    assert_eq!(sd.write(0, &pattern(2, 0)), Err(SdError::DataTimeout { cmd: 25 }));
    sd.host().faults.write_stall = false;
    sd.write(0, &pattern(2, 0)).unwrap();
}

#[test]
fn a_card_pulled_out_mid_transfer_is_forgotten() {
    let mut sd = card(Card::sdhc(SECTORS));
    sd.host().faults.remove_after_blocks = Some(2);
    assert_eq!(sd.write(0, &pattern(4, 0)), Err(SdError::CardRemoved));
    assert!(sd.info().is_none());
    assert_eq!(sd.lost(), Some(SdError::CardRemoved));
    let mut buf = [0u8; 512];
    assert_eq!(sd.read(0, &mut buf), Err(SdError::CardRemoved), "later requests fail at once");
    assert_eq!(sd.capacity_sectors(), 0);
}

#[test]
fn write_protect_bad_lengths_and_ranges_send_nothing() {
    let mut host = FakeSdhci::new(Some(Card::sdhc(SECTORS)));
    host.write_protect = true;
    let mut sd = SdCard::init(host, Options::default()).map_err(|(_, e)| e).unwrap();
    assert!(sd.read_only());
    sd.host().log.clear();
    assert_eq!(sd.write(0, &[0; 512]), Err(SdError::ReadOnly));
    assert_eq!(sd.write(0, &[0; 100]), Err(SdError::BadLength(100)));
    let mut buf = [0u8; 1024];
    assert_eq!(sd.read(SECTORS as u64 - 1, &mut buf), Err(SdError::OutOfRange { sector: SECTORS as u64 - 1, sectors: 2, capacity: SECTORS as u64 }));
    assert_eq!(sd.read(u64::MAX, &mut buf[..512]).unwrap_err(), SdError::OutOfRange { sector: u64::MAX, sectors: 1, capacity: SECTORS as u64 });
    assert!(sd.host().log.is_empty());
    // disable-wp: the switch is ignored.
    let mut host = FakeSdhci::new(Some(Card::sdhc(SECTORS)));
    host.write_protect = true;
    let opts = Options { ignore_write_protect: true, ..Options::default() };
    let mut sd = SdCard::init(host, opts).map_err(|(_, e)| e).unwrap();
    sd.write(0, &[3; 512]).unwrap();
}

#[test]
fn a_zero_base_clock_falls_back_to_the_configured_rate() {
    let mut host = FakeSdhci::new(Some(Card::sdhc(SECTORS)));
    host.caps &= !0xff00;
    let opts = Options { base_clock_hz: 100_000_000, ..Options::default() };
    let sd = SdCard::init(host, opts).map_err(|(_, e)| e).unwrap();
    assert_eq!(sd.info().unwrap().clock_hz, 25_000_000);
}
