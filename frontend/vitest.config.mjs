import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    environment: 'jsdom',
    globals: true,
    include: ['tests/**/*.test.{ts,tsx}'],
    setupFiles: ['tests/setup.ts'],
    testTimeout: 30_000,
    // @grafana/ui imports stylesheets from its dependencies: let Vite handle those modules.
    server: { deps: { inline: [/@grafana\//, /@rc-component/, /rc-[a-z-]+/] } },
  },
});
