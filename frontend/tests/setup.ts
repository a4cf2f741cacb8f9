import { version as grafanaData } from '@grafana/data/package.json';
import React from 'react';

// A run against another package set (compat/grafana13) says which React it expects: fail
// loudly if the swap did not happen, rather than test the default set twice.
const expected = process.env.EXPECT_REACT_MAJOR;
if (expected && React.version.split('.')[0] !== expected) {
  throw new Error(`expected React ${expected}, got ${React.version} (@grafana/data ${grafanaData})`);
}

// What jsdom lacks and @grafana/ui expects of a browser.
Object.defineProperty(window, 'matchMedia', {
  writable: true,
  value: (query: string) => ({
    matches: false,
    media: query,
    onchange: null,
    addListener: () => {},
    removeListener: () => {},
    addEventListener: () => {},
    removeEventListener: () => {},
    dispatchEvent: () => false,
  }),
});

class NoResizeObserver {
  observe() {}
  unobserve() {}
  disconnect() {}
}
(globalThis as unknown as { ResizeObserver: unknown }).ResizeObserver = NoResizeObserver;

class NoIntersectionObserver {
  observe() {}
  unobserve() {}
  disconnect() {}
  takeRecords() {
    return [];
  }
}
(globalThis as unknown as { IntersectionObserver: unknown }).IntersectionObserver = NoIntersectionObserver;
