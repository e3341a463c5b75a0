/** Canonical JSON and unpadded Base64 (src/events/canonical_json.ts, base64.ts). */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  Base64Error,
  canonicalJson,
  CanonicalJsonError,
  compareCodePoints,
  decodeBase64,
  decodeBase64Url,
  encodeBase64,
  encodeBase64Url,
} from "../src/events/index.js";

describe("canonical JSON: the spec's examples", () => {
  // Source: matrix-org/matrix-spec, content/appendices.md, "Canonical JSON" → "Examples".
  // Each input is the spec's JSON text, parsed as a server would receive it.
  const examples: [string, string][] = [
    ["{}", "{}"],
    ['{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'],
    ['{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'],
    ['{"b":"2","a":"1"}', '{"a":"1","b":"2"}'],
    [
      `{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}`,
      '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ],
    ['{\n    "a": "日本語"\n}', '{"a":"日本語"}'],
    ['{\n    "本": 2,\n    "日": 1\n}', '{"日":1,"本":2}'],
    ['{\n    "a": "\\u65E5"\n}', '{"a":"日"}'],
    ['{\n    "a": null\n}', '{"a":null}'],
    ['{\n    "a": -0,\n    "b": 1e10\n}', '{"a":0,"b":10000000000}'],
  ];
  for (const [input, expected] of examples) {
    test(`${input.replace(/\s+/g, " ").slice(0, 50)} → ${expected.slice(0, 40)}`, () => {
      assert.equal(canonicalJson(JSON.parse(input)), expected);
    });
  }
});

describe("canonical JSON: strings", () => {
  test("uses the short escapes and \\u00XX for other control characters, nothing else", () => {
    assert.equal(canonicalJson("\b\t\n\f\r\"\\"), '"\\b\\t\\n\\f\\r\\"\\\\"');
    assert.equal(canonicalJson("\u0000\u0001\u001f"), '"\\u0000\\u0001\\u001f"');
    // DEL, U+2028, U+2029, "/" and non-ASCII are written literally.
    assert.equal(canonicalJson("\u007f\u2028\u2029/é😀"), '"\u007f\u2028\u2029/é😀"');
  });

  test("a lone surrogate is not UTF-8 and is refused", () => {
    assert.throws(() => canonicalJson("a\ud800b"), CanonicalJsonError);
    assert.throws(() => canonicalJson({ "\udc00": 1 }), CanonicalJsonError);
    assert.equal(canonicalJson("\ud83d\ude00"), '"😀"');
  });

  test("keys sort by code point, not by UTF-16 code unit", () => {
    // U+FF61 < U+1F600 by code point, but its UTF-16 unit 0xFF61 > 0xD83D.
    const obj = { "\u{1F600}": 1, "\uFF61": 2, a: 3, "\u00e9": 4 };
    assert.equal(canonicalJson(obj), '{"a":3,"é":4,"｡":2,"😀":1}');
    assert.ok(compareCodePoints("\uFF61", "\u{1F600}") < 0);
    assert.ok(compareCodePoints("\u{1F600}", "\u{1F601}") < 0);
    assert.ok(compareCodePoints("ab", "abc") < 0);
    assert.equal(compareCodePoints("x", "x"), 0);
  });
});

describe("canonical JSON: numbers and non-JSON values", () => {
  test("integers at the edges of the range are fine", () => {
    assert.equal(canonicalJson([2 ** 53 - 1, -(2 ** 53) + 1, 0, -0]), "[9007199254740991,-9007199254740991,0,0]");
  });

  test("floats, NaN, infinities and out-of-range integers throw", () => {
    for (const bad of [1.5, 0.1, NaN, Infinity, -Infinity, 2 ** 53, -(2 ** 53), 1e300]) {
      assert.throws(() => canonicalJson({ n: bad }), CanonicalJsonError, String(bad));
    }
  });

  test("the error names where the bad value is", () => {
    assert.throws(
      () => canonicalJson({ content: { list: [1, 2.5] } }),
      (e: unknown) => e instanceof CanonicalJsonError && e.path === "content.list[1]" && /2\.5/.test(e.message),
    );
    const cases: [unknown, string][] = [
      [[0, [1, { a: [2, 0.5] }]], "[1][1].a[1]"],
      [{ a: { b: { c: undefined, d: [[NaN]] } } }, "a.b.d[0][0]"],
      [{ ok: 1, [`bad\uD800key`]: 1 }, "bad\uD800key"],
      [{ x: [undefined] }, "x[0]"],
      [1.5, ""],
    ];
    for (const [value, path] of cases) {
      assert.throws(
        () => canonicalJson(value),
        (e: unknown) => e instanceof CanonicalJsonError && e.path === path && e.message === (path ? `${e.reason} (at ${path})` : e.reason),
        path,
      );
    }
  });

  test("non-JSON values throw; undefined object properties are omitted as JSON.stringify does", () => {
    assert.throws(() => canonicalJson(undefined), CanonicalJsonError);
    assert.throws(() => canonicalJson([undefined]), CanonicalJsonError);
    assert.throws(() => canonicalJson({ f: () => 1 }), CanonicalJsonError);
    assert.throws(() => canonicalJson({ s: Symbol("x") }), CanonicalJsonError);
    assert.throws(() => canonicalJson({ d: new Date(0) }), CanonicalJsonError);
    assert.throws(() => canonicalJson(new Map()), CanonicalJsonError);
    assert.equal(canonicalJson({ a: undefined, b: 1 }), '{"b":1}');
    assert.equal(canonicalJson(Object.assign(Object.create(null) as object, { z: 1, y: [true, false] })), '{"y":[true,false],"z":1}');
  });

  test("bigints within the range are integers", () => {
    assert.equal(canonicalJson({ n: 12n }), '{"n":12}');
    assert.throws(() => canonicalJson({ n: 2n ** 53n }), CanonicalJsonError);
  });
});

describe("unpadded Base64", () => {
  // Source: matrix-org/matrix-spec, content/appendices.md, "Unpadded Base64" examples.
  const examples: [string, string][] = [
    ["", ""],
    ["f", "Zg"],
    ["fo", "Zm8"],
    ["foo", "Zm9v"],
    ["foob", "Zm9vYg"],
    ["fooba", "Zm9vYmE"],
    ["foobar", "Zm9vYmFy"],
  ];
  for (const [plain, encoded] of examples) {
    test(`UNPADDED_BASE64(${JSON.stringify(plain)}) = ${JSON.stringify(encoded)}`, () => {
      assert.equal(encodeBase64(Buffer.from(plain)), encoded);
      assert.equal(decodeBase64(encoded).toString(), plain);
    });
  }

  test("decoding accepts padding; URL-safe uses - and _", () => {
    assert.equal(decodeBase64("Zm8=").toString(), "fo");
    assert.equal(decodeBase64Url("Zg==").toString(), "f");
    const bytes = Buffer.from([0xfb, 0xff, 0xfe]);
    assert.equal(encodeBase64(bytes), "+//+");
    assert.equal(encodeBase64Url(bytes), "-__-");
    assert.deepEqual(decodeBase64Url("-__-"), bytes);
  });

  test("decoding is strict about the alphabet, padding and length", () => {
    assert.throws(() => decodeBase64("-__-"), Base64Error);
    assert.throws(() => decodeBase64Url("+//+"), Base64Error);
    assert.throws(() => decodeBase64("Zm9v!"), Base64Error);
    assert.throws(() => decodeBase64("Z"), Base64Error);
    assert.throws(() => decodeBase64("Zg="), Base64Error);
    assert.throws(() => decodeBase64("Z==="), Base64Error);
  });
});
