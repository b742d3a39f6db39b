/** Figures measured once per round, summarised as median, min and max over the rounds. */

export interface Figure {
  /** The median over the rounds (for an even count, the mean of the two middle values). */
  value: number;
  min: number;
  max: number;
  /** How many rounds the figure was measured in. */
  n: number;
  unit: string;
}

export type Figures = Record<string, Figure>;

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Collects one value per round for each named figure, in the order the figures were first seen. */
export class Samples {
  private readonly series = new Map<string, { unit: string; values: number[] }>();

  add(name: string, unit: string, value: number): void {
    if (!Number.isFinite(value)) throw new Error(`figure ${name} is not a finite number: ${value}`);
    const series = this.series.get(name) ?? { unit, values: [] };
    if (series.unit !== unit) throw new Error(`figure ${name} measured in ${unit} and ${series.unit}`);
    series.values.push(value);
    this.series.set(name, series);
  }

  values(name: string): readonly number[] {
    return this.series.get(name)?.values ?? [];
  }

  figures(): Figures {
    const figures: Figures = {};
    for (const [name, { unit, values }] of this.series) {
      figures[name] = { value: roundFigure(median(values)), min: roundFigure(Math.min(...values)), max: roundFigure(Math.max(...values)), n: values.length, unit };
    }
    return figures;
  }
}

/** Five significant digits from 100 up, three below: more would be noise. */
export function roundFigure(value: number): number {
  if (value === 0) return 0;
  return Number(value.toPrecision(Math.abs(value) >= 100 ? 5 : 3));
}
