/* make bench-formats' same-run baseline: libxml2's SAX2 push parser alone, with callbacks that
 * do nothing, fed 1 MiB at a time as BankLinkFormats' XML walker feeds it. No reader can be
 * faster than this on the same machine; the walker's rate is reported as a ratio to it. */
#include <libxml/parser.h>
#include <stdio.h>
#include <string.h>

static long elements;

static void start(void *context, const xmlChar *localName, const xmlChar *prefix, const xmlChar *uri, int namespaceCount,
                  const xmlChar **namespaces, int attributeCount, int defaulted, const xmlChar **attributes) {
  elements++;
}
static void end(void *context, const xmlChar *localName, const xmlChar *prefix, const xmlChar *uri) {}
static void characters(void *context, const xmlChar *text, int length) {}

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: sax_noop FILE\n"); return 64; }
  xmlSAXHandler handler;
  memset(&handler, 0, sizeof handler);
  handler.initialized = XML_SAX2_MAGIC;
  handler.startElementNs = start;
  handler.endElementNs = end;
  handler.characters = characters;
  xmlParserCtxtPtr context = xmlCreatePushParserCtxt(&handler, NULL, NULL, 0, NULL);
  xmlCtxtUseOptions(context, XML_PARSE_NONET);
  FILE *file = fopen(argv[1], "rb");
  if (!file) { perror(argv[1]); return 66; }
  static char buffer[1 << 20];
  size_t count;
  while ((count = fread(buffer, 1, sizeof buffer, file)) > 0) {
    if (xmlParseChunk(context, buffer, (int)count, 0) != 0) { fprintf(stderr, "not well-formed\n"); return 65; }
  }
  if (xmlParseChunk(context, NULL, 0, 1) != 0) { fprintf(stderr, "not well-formed\n"); return 65; }
  printf("%ld elements\n", elements);
  xmlFreeParserCtxt(context);
  return 0;
}
