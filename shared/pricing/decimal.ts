import Big from 'big.js';

/**
 * Exact decimal arithmetic for prices: a Big constructor of its own (its settings touch no other user of
 * big.js), strict so that no binary float enters by accident and no lossy number leaves.
 */
const Decimal = Big();
Decimal.strict = true;

export type Decimal = Big;

/** Decimal places a rate may have (the price_items columns are numeric(21, 9)). */
export const RATE_DECIMALS = 9;
/** Rates are below 10^12 credits (12 integer digits). */
const RATE_INTEGER_DIGITS = 12;
/** A JSON number is taken as the decimal it was written as only up to a double's 15 significant digits. */
const NUMBER_DIGITS = 15;

const PLAIN = /^-?\d+(\.\d+)?$/;

/** The decimal a string in plain notation (`12`, `0.000001`) writes; throws a RangeError on anything else. */
export function decimal(text: string): Decimal {
  if (!PLAIN.test(text)) throw new RangeError(`${JSON.stringify(text)} is not a plain decimal`);
  return new Decimal(text);
}

/** An integer count (tokens, units) as a Decimal, exactly. */
export const count = (n: number): Decimal => new Decimal(String(n));

/** Plain notation, no exponent, no trailing zeros: `2.5`, `0.000001`. */
export const plain = (d: Decimal): string => d.toFixed();

/** The whole number of credits `d` rounds up to (d >= 0). */
export const roundUp = (d: Decimal): Decimal => d.round(0, Decimal.roundUp);

/** Rounds `d` up to at most `places` decimal places. */
export const roundUpTo = (d: Decimal, places: number): Decimal => d.round(places, Decimal.roundUp);

/**
 * The decimal a JSON number was written as, when that is certain: a double holds any decimal of up to 15
 * significant digits exactly enough for its shortest form to give it back. Longer ones (and non-finite
 * numbers) are undefined: the caller asks for a decimal string instead.
 */
export function fromNumber(n: number): Decimal | undefined {
  if (!Number.isFinite(n)) return undefined;
  const d = new Decimal(String(n));
  return d.c.length <= NUMBER_DIGITS ? d : undefined;
}

/** What is wrong with `value` as a rate (credits, non-negative, at most 9 decimal places), or undefined. */
export function rateProblem(value: string | number): string | undefined {
  let d: Decimal | undefined;
  if (typeof value === 'number') {
    d = fromNumber(value);
    if (!d) return 'has more digits than a JSON number carries exactly: send it as a decimal string';
  } else {
    if (!PLAIN.test(value)) return 'must be a decimal number in plain notation, such as "2.5"';
    d = new Decimal(value);
  }
  // Big keeps the sign of -0: refused with the negatives rather than stored as "-0".
  if (d.s < 0) return 'must not be negative';
  if (d.round(RATE_DECIMALS, Decimal.roundDown).cmp(d) !== 0) {
    return `must have at most ${RATE_DECIMALS} decimal places`;
  }
  if (d.gte(new Decimal(`1e${RATE_INTEGER_DIGITS}`))) return `must be below 10^${RATE_INTEGER_DIGITS}`;
  return undefined;
}

/** `value` as an exact rate; call after `rateProblem` found nothing wrong. */
export function rate(value: string | number): Decimal {
  const d = typeof value === 'number' ? fromNumber(value) : decimal(value);
  if (!d || rateProblem(value)) throw new RangeError(`${String(value)} is not a valid rate`);
  return d;
}

/**
 * A binary float from a data set, read at a double's 15 significant digits: the decimal it was written as,
 * without artifacts of arithmetic such as 0.18000000000000002.
 */
export function fromFloat(n: number): Decimal {
  if (!Number.isFinite(n)) throw new RangeError(`${n} is not a finite number`);
  return new Decimal(n.toPrecision(NUMBER_DIGITS));
}
