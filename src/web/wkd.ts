/** Placeholder until helper "wkd-wks" lands the real Web Key Directory: registers nothing. */
import type { HttpApp } from '../http/stack.js';
import type { WebDeps } from './server.js';

export function registerWkdRoutes(_app: HttpApp, _deps: WebDeps): void {}
