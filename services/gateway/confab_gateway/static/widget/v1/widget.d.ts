// Types of the widget's module (widget.js); the client's are in client.d.ts.
import type { Widget, WidgetOptions } from './client.js';

export type { Widget, WidgetOptions };

/** Draws the widget (a launcher and a panel, or inline in options.container). */
export declare function mount(options: WidgetOptions): Widget;
