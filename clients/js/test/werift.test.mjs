// The SDK outside the browser: two `Room`s in Node, with werift's
// RTCPeerConnection and the `ws` package's WebSocket injected (the path
// react-native-webrtc takes), through a real callgate. alice publishes an
// Opus track whose payloads are numbered; bob's room must emit
// `trackSubscribed` for it and bob must receive those very payloads.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { MediaStream, MediaStreamTrack, RTCPeerConnection, RtpPacket, RtpHeader } from 'werift';
import WebSocket from 'ws';

import { Room } from '../callgate.js';
import {
  CALLGATE_BIN, HOST, freeTcpPort, requireCallgateBinary, startServer, stopServer, waitForHealthy,
} from '../../../tests/browser/harness.mjs';

function token(room, identity) {
  const out = spawnSync(CALLGATE_BIN, ['token', '--dev', '--room', room, '--identity', identity], {
    encoding: 'utf8',
  });
  assert.equal(out.status, 0, out.stderr);
  return out.stdout.trim();
}

/**
 * werift's peer connection, configured as an app would for this network:
 * werift leaves loopback out of its host candidates, and the test's
 * network namespace has nothing else.
 */
class LoopbackPeerConnection extends RTCPeerConnection {
  constructor(config = {}) {
    super({ ...config, iceAdditionalHostAddresses: ['127.0.0.1'], iceUseIpv6: false });
  }
}

/** A payload that says which packet it is: `werift-<n>` padded to 40 bytes. */
const payload = (n) => Buffer.from(`werift-${n}`.padEnd(40, '.'));

test('two SDK rooms in Node with werift exchange audio through callgate', { timeout: 60_000 }, async () => {
  requireCallgateBinary();
  const [http, udp, tcp] = [await freeTcpPort(), await freeTcpPort(), await freeTcpPort()];
  const server = startServer([
    'serve', '--dev', '--no-turn', '--data-dir', `/tmp/callgate-werift-${process.pid}`,
    '--http-port', String(http), '--udp-port', String(udp), '--tcp-port', String(tcp),
  ]);
  const rooms = [];
  try {
    await waitForHealthy(server, http);
    const url = `ws://${HOST}:${http}/rtc`;
    const options = (identity) => ({
      url,
      token: token('werift', identity),
      RTCPeerConnection: LoopbackPeerConnection,
      WebSocket,
      simulcast: false,
    });
    const alice = new Room(options('alice'));
    const bob = new Room(options('bob'));
    rooms.push(alice, bob);
    await alice.connect();
    await bob.connect();

    const received = [];
    const subscribed = new Promise((resolve) => {
      bob.on('trackSubscribed', ({ participantSid, kind, track }) => {
        track.onReceiveRtp.subscribe((rtp) => received.push(rtp.payload.toString()));
        resolve({ participantSid, kind });
      });
    });

    const mic = new MediaStreamTrack({ kind: 'audio' });
    await alice.publish(new MediaStream([mic]));
    let n = 0;
    const sending = setInterval(() => {
      const header = new RtpHeader({
        payloadType: 111,
        sequenceNumber: n & 0xffff,
        timestamp: (n * 960) >>> 0,
        ssrc: 0x5eed,
        marker: false,
      });
      mic.writeRtp(new RtpPacket(header, payload(n)));
      n += 1;
    }, 20);
    try {
      const { participantSid, kind } = await Promise.race([
        subscribed,
        new Promise((_, reject) => setTimeout(() => reject(new Error('no trackSubscribed at bob in 15 s')), 15_000)),
      ]);
      assert.equal(kind, 'audio');
      assert.equal(participantSid, alice.localParticipant.sid);
      // Packets arrive, and they are alice's, byte for byte.
      const deadline = Date.now() + 20_000;
      while (received.length < 25 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(received.length >= 25, `bob got ${received.length} packets`);
      for (const text of received) {
        assert.match(text, /^werift-\d+\.*$/);
        assert.equal(text.length, 40);
      }
      const numbers = received.map((t) => Number(t.slice('werift-'.length).replace(/\.+$/, '')));
      assert.ok(numbers.every((x) => x < n), 'only what alice sent');
    } finally {
      clearInterval(sending);
    }
  } finally {
    for (const room of rooms) await room.leave().catch(() => {});
    await stopServer(server);
  }
});
