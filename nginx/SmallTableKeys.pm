# SmallTable's key hash for nginx's embedded Perl (libnginx-mod-http-perl; docs/keys.md).
#
# perl_set $smalltable_bearer_hash SmallTableKeys::bearer_hash: the SHA-256 (hex) of the
# key in "Authorization: Bearer stk_...", or "" when the header is absent or malformed.
# The keys map (ingestd/store/keys.py) is looked up by it. This is the one thing a write
# with a key needs computed: Perl's interpreter stays loaded in the worker, where njs 0.7
# builds a virtual machine for each request that uses it, which cost more than the
# rest of a keyed write (bench/keys_cost.py). nginx/smalltable.js decides everything
# else from the same hash, and mints new keys.
package SmallTableKeys;

use strict;
use warnings;
use Digest::SHA qw(sha256_hex);

sub bearer_hash {
    my $r = shift;
    my $header = $r->header_in('Authorization');
    return '' unless defined $header && $header =~ /\ABearer +(stk_[0-9a-f]{32}) *\z/;
    return sha256_hex($1);
}

1;
