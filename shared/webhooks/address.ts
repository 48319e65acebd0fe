import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';

/**
 * Where an endpoint may point: an address on the public internet. The dispatcher runs inside the VPC, next to
 * the database proxy, and stores an excerpt of every answer, so an endpoint on a private, loopback,
 * link-local (cloud metadata) or otherwise reserved address would let whoever registers it read the network
 * behind the service. Loopback is let through only for the local stack (`allowLoopback`).
 */

/** Address ranges that are not the public internet (IANA special-purpose registries). */
const NOT_PUBLIC: ReadonlyArray<readonly [string, number, 'ipv4' | 'ipv6']> = [
  ['0.0.0.0', 8, 'ipv4'], // "this network"
  ['10.0.0.0', 8, 'ipv4'], // private
  ['100.64.0.0', 10, 'ipv4'], // carrier-grade NAT
  ['127.0.0.0', 8, 'ipv4'], // loopback
  ['169.254.0.0', 16, 'ipv4'], // link-local, cloud metadata
  ['172.16.0.0', 12, 'ipv4'], // private
  ['192.0.0.0', 24, 'ipv4'], // IETF protocol assignments
  ['192.0.2.0', 24, 'ipv4'], // documentation
  ['192.88.99.0', 24, 'ipv4'], // 6to4 relay anycast
  ['192.168.0.0', 16, 'ipv4'], // private
  ['198.18.0.0', 15, 'ipv4'], // benchmarking
  ['198.51.100.0', 24, 'ipv4'], // documentation
  ['203.0.113.0', 24, 'ipv4'], // documentation
  ['224.0.0.0', 4, 'ipv4'], // multicast
  ['240.0.0.0', 4, 'ipv4'], // reserved, broadcast
  ['::', 96, 'ipv6'], // unspecified, loopback, IPv4-compatible (deprecated: embeds any IPv4)
  ['::ffff:0:0:0', 96, 'ipv6'], // IPv4-translated (SIIT)
  ['64:ff9b::', 96, 'ipv6'], // NAT64 (reaches IPv4 addresses, private ones included)
  ['64:ff9b:1::', 48, 'ipv6'], // local-use NAT64
  ['100::', 64, 'ipv6'], // discard
  ['2001::', 23, 'ipv6'], // IETF protocol assignments, Teredo (2001::/32) among them
  ['2001:db8::', 32, 'ipv6'], // documentation
  ['2002::', 16, 'ipv6'], // 6to4 (embeds any IPv4)
  ['fc00::', 7, 'ipv6'], // unique local
  ['fe80::', 10, 'ipv6'], // link-local
  ['fec0::', 10, 'ipv6'], // site-local (deprecated)
  ['ff00::', 8, 'ipv6'], // multicast
];

const notPublic = new BlockList();
for (const [network, prefix, family] of NOT_PUBLIC) notPublic.addSubnet(network, prefix, family);
const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

const familyOf = (address: string) => (isIP(address) === 6 ? 'ipv6' : 'ipv4');

/** Whether an endpoint may be reached at `address` (an IP; IPv4-mapped IPv6 is judged as its IPv4). */
export function isAllowedAddress(address: string, allowLoopback: boolean): boolean {
  const family = familyOf(address);
  if (allowLoopback && loopback.check(address, family)) return true;
  return !notPublic.check(address, family);
}

/** The IP a URL's hostname spells, if it is one (`[::1]` is `::1`), else undefined. */
export function ipLiteralOf(hostname: string): string | undefined {
  const bare = hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
  return isIP(bare) ? bare : undefined;
}

/** The error a connection gets when its host resolves to no address it may reach. */
export class NotPublicAddressError extends Error {
  readonly code = 'ENOTPUBLIC';
  constructor(hostname: string, addresses: readonly string[]) {
    super(
      ipLiteralOf(hostname)
        ? `${hostname} is not a public address`
        : `${hostname} resolves only to addresses that are not public (${addresses.join(', ')})`,
    );
  }
}

/**
 * A `lookup` for http(s).request that resolves the host and connects only to an address it may reach, so a
 * name that resolves (or is re-pointed, after registration) to a private address is refused at the socket,
 * not just when the endpoint was checked.
 */
export function publicOnlyLookup(allowLoopback: boolean): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (error, resolved: LookupAddress[]) => {
      if (error) return callback(error, '', 0);
      const allowed = resolved.filter((a) => isAllowedAddress(a.address, allowLoopback));
      if (allowed.length === 0) {
        return callback(
          new NotPublicAddressError(
            hostname,
            resolved.map((a) => a.address),
          ),
          '',
          0,
        );
      }
      if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, allowed);
      callback(null, allowed[0]!.address, allowed[0]!.family);
    });
  };
}
