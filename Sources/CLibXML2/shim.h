// libxml2's SAX2 push parser, for BankLinkFormats' XML walker (Debian's libxml2-dev).
#include <libxml/xmlversion.h>
// Debian builds libxml2 with ICU, whose headers would clash with the ICU that Foundation
// bundles. Nothing here touches a character encoding handler (only pointers to one), so the
// ICU members of that struct are left out of this view of it.
#undef LIBXML_ICU_ENABLED
#include <libxml/parser.h>
#include <libxml/SAX2.h>
#include <libxml/xmlerror.h>
