/** Placeholder until helper "web-page" lands the real page: registers nothing. */
import type { HttpApp } from '../http/stack.js';
import type { WebDeps } from './server.js';

export function registerPageRoutes(_app: HttpApp, _deps: WebDeps): void {}
