import { describe, expect, it } from 'vitest';
import { ipLiteralOf, isAllowedAddress } from '../../shared/webhooks/address.js';

describe('where an outbound webhook may connect', () => {
  it.each(['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8'])(
    'allows the public address %s',
    (address) => {
      expect(isAllowedAddress(address, false)).toBe(true);
    },
  );

  it.each([
    ['0.0.0.0', 'this network'],
    ['10.1.2.3', 'private'],
    ['100.64.0.1', 'carrier-grade NAT'],
    ['127.0.0.1', 'loopback'],
    ['169.254.169.254', 'link-local (cloud metadata)'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.0.0.8', 'IETF'],
    ['192.168.1.1', 'private'],
    ['198.18.0.1', 'benchmarking'],
    ['224.0.0.1', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['::ffff:10.0.0.1', 'IPv4-mapped private'],
    ['::ffff:169.254.169.254', 'IPv4-mapped link-local'],
    ['64:ff9b::a00:1', 'NAT64 of a private address'],
    ['fd12:3456::1', 'unique local'],
    ['fe80::1', 'link-local'],
    ['::7f00:1', 'IPv4-compatible loopback'],
    ['::ffff:0:7f00:1', 'IPv4-translated loopback'],
    ['2002:7f00:1::', '6to4 of loopback'],
    ['2001:0:4136:e378::1', 'Teredo'],
    ['64:ff9b:1::a00:1', 'local-use NAT64'],
    ['fec0::1', 'site-local'],
    ['ff02::1', 'multicast'],
  ])('refuses %s (%s)', (address) => {
    expect(isAllowedAddress(address, false)).toBe(false);
  });

  it('allows loopback, and only loopback, to the local stack', () => {
    expect(isAllowedAddress('127.0.0.1', true)).toBe(true);
    expect(isAllowedAddress('::1', true)).toBe(true);
    expect(isAllowedAddress('10.0.0.1', true)).toBe(false);
    expect(isAllowedAddress('169.254.169.254', true)).toBe(false);
  });

  it('reads an IP out of a URL hostname, and nothing out of a name', () => {
    expect(ipLiteralOf(new URL('https://[::1]:8443/').hostname)).toBe('::1');
    expect(ipLiteralOf(new URL('https://2130706433/').hostname)).toBe('127.0.0.1');
    expect(ipLiteralOf(new URL('https://hooks.example.com/').hostname)).toBeUndefined();
  });
});
