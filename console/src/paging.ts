// Paging through a list RPC by its opaque next_page_token. The API only goes forward, so
// the tokens of the pages already seen are kept to go back.

export class Pages {
  private before: string[] = [];
  /** The page_token of the page shown ("" for the first). */
  current = "";
  /** The next_page_token of the page shown ("" on the last). */
  following = "";

  /** The request's parameters for the page shown: the filters and its token. */
  params(filters: Record<string, unknown>): Record<string, unknown> {
    return this.current ? { ...filters, page_token: this.current } : { ...filters };
  }

  /** Whether there is a page before the one shown, or after it. */
  get hasPrevious(): boolean {
    return this.before.length > 0;
  }
  get hasNext(): boolean {
    return this.following !== "";
  }
  /** The page shown, counting from 1. */
  get number(): number {
    return this.before.length + 1;
  }

  /** The page shown was answered with `nextPageToken`. */
  answered(nextPageToken: string | undefined): void {
    this.following = nextPageToken ?? "";
  }
  next(): void {
    if (!this.hasNext) return;
    this.before.push(this.current);
    this.current = this.following;
    this.following = "";
  }
  previous(): void {
    if (!this.hasPrevious) return;
    this.current = this.before.pop() ?? "";
    this.following = "";
  }
  /** Back to the first page (the filters changed: the tokens belong to the old ones). */
  reset(): void {
    this.before = [];
    this.current = "";
    this.following = "";
  }
}
