import * as z from 'zod';
import { ServiceError } from '../errors.js';
import {
  activatePriceBook,
  createPriceBookDraft,
  findActivePriceBook,
  findPriceBook,
  listPriceBooks,
  type PriceBook,
  type PriceBookSummary,
} from '../pricing/price-book.js';
import { adminActor, defineEndpoint, nowOf, ok } from './endpoint.js';
import {
  priceBookSchema,
  priceBookSummarySchema,
  priceItemInput,
  priceVersion,
  reasonBody,
  storableText,
} from './schemas.js';

const summaryView = (book: PriceBookSummary) => ({
  version: book.version,
  status: book.status,
  itemCount: book.itemCount,
  createdAt: book.createdAt.toISOString(),
  activatedAt: book.activatedAt?.toISOString() ?? null,
  retiredAt: book.retiredAt?.toISOString() ?? null,
});

const bookView = (book: PriceBook) => ({ ...summaryView(book), items: book.items });

const adminErrors = { 401: 'no IAM identity', 403: 'not an admin principal' } as const;
const versionParams = z.object({ version: priceVersion }).strict();

export const getPrices = defineEndpoint({
  route: 'GET /v1/prices',
  summary: 'The active price book: credits per 1,000,000 tokens per pool, or per unit, for each SKU',
  responses: { 200: { description: 'the active version and its items', schema: priceBookSchema } },
  errors: { 404: 'no price book has been activated yet' },
  async handle(_request, { db }) {
    const book = await findActivePriceBook(db);
    if (!book) throw new ServiceError('price_book_not_found', 'no price book is active');
    return ok(bookView(book));
  },
});

export const listAdminPrices = defineEndpoint({
  route: 'GET /v1/admin/prices',
  summary: 'Price book versions, newest first: drafts, the active one, the retired ones',
  responses: {
    200: { description: 'the versions', schema: z.object({ data: z.array(priceBookSummarySchema) }) },
  },
  errors: adminErrors,
  async handle(_request, { db }) {
    return ok({ data: (await listPriceBooks(db, 500)).map(summaryView) });
  },
});

export const getAdminPrices = defineEndpoint({
  route: 'GET /v1/admin/prices/{version}',
  summary: 'One price book version with its items, whatever its status (review a draft before activating it)',
  params: versionParams,
  responses: { 200: { description: 'the version', schema: priceBookSchema } },
  errors: { ...adminErrors, 404: 'no such version' },
  async handle({ params }, { db }) {
    const book = await findPriceBook(db, params.version);
    if (!book) throw new ServiceError('price_book_not_found', `no price book ${params.version}`);
    return ok(bookView(book));
  },
});

export const createAdminPrices = defineEndpoint({
  route: 'POST /v1/admin/prices',
  summary: 'Creates a draft price book version; it prices nothing until activated',
  body: z
    .object({
      version: priceVersion,
      items: z.array(priceItemInput).min(1).max(5000),
      reason: storableText(2000),
    })
    .strict(),
  responses: { 201: { description: 'the draft', schema: priceBookSchema } },
  errors: {
    ...adminErrors,
    400: 'invalid body: a negative rate, more than 9 decimal places, a duplicate SKU (the problem names it)',
    409: 'a version with this name exists',
  },
  async handle({ body, caller }, { db }) {
    const book = await createPriceBookDraft(
      db,
      { version: body.version, items: body.items },
      adminActor(caller, body.reason),
    );
    return ok(bookView(book), 201);
  },
});

export const activateAdminPrices = defineEndpoint({
  route: 'POST /v1/admin/prices/{version}/activate',
  summary: 'Activates a draft: it prices everything from now on, and the active version is retired at once',
  params: versionParams,
  body: reasonBody,
  responses: {
    200: {
      description: 'the activated version, and the one it replaced',
      schema: priceBookSchema.extend({ replaced: z.string().nullable() }),
    },
  },
  errors: { ...adminErrors, 404: 'no such version', 409: 'the version is active or retired, not a draft' },
  async handle({ params, body, caller }, deps) {
    const { book, retired } = await activatePriceBook(
      deps.db,
      params.version,
      adminActor(caller, body.reason),
      nowOf(deps),
    );
    return ok({ ...bookView(book), replaced: retired });
  },
});
