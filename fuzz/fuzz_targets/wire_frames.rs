//! dlmd's frame decoder, fed whatever a hostile client might send, split
//! into reads at places the input chooses.
//!
//! Checked: no panic; a frame handed out is one that was whole in the
//! input (its length prefix and kind byte agree with it); after an error
//! the decoder is never asked again (the daemon closes such a stream);
//! the bytes held never exceed what was fed and not yet taken; and every
//! body goes through the parsers the daemon applies to its kind.
#![no_main]

use dlm_proto::records;
use dlm_proto::wire::{self, Decoder, Kind, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read sizes: 1 to 256 bytes a read.
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step) + 1;
    let mut d = Decoder::new();
    let mut fed = 0usize;
    let mut taken = 0usize;
    for chunk in stream.chunks(step) {
        d.feed(chunk);
        fed += chunk.len();
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.body.len() < MAX_FRAME);
                    let start = taken;
                    taken += 5 + f.body.len();
                    assert!(taken <= fed, "a frame from bytes not yet fed");
                    // The frame is the bytes of the stream at that place.
                    let len = u32::from_le_bytes(stream[start..start + 4].try_into().unwrap());
                    assert_eq!(len as usize, f.body.len() + 1);
                    assert_eq!(stream[start + 4], f.kind as u8);
                    assert_eq!(&stream[start + 5..taken], f.body);
                    parse_as_the_daemon_does(f.kind, f.body);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert_eq!(d.pending(), fed - taken);
    }
});

/// The parsers dlmd runs on a body of each kind; none may panic.
fn parse_as_the_daemon_does(kind: Kind, body: &[u8]) {
    match kind {
        Kind::Write => {
            let _ = records::decode_write(body);
        }
        Kind::Result => {
            let _ = wire::result_value(body);
        }
        Kind::Ast => {
            let _ = records::decode_result(body);
        }
        Kind::Version => {
            let _ = records::decode_version(body);
        }
        Kind::Query => {
            if let Some((&wire::QUERY_LOCK_PAGE, rest)) = body.split_first() {
                let _ = wire::parse_page_query(rest);
            }
        }
        _ => {}
    }
}
