# SmallTable's keys in nginx's embedded Perl (libnginx-mod-http-perl; docs/keys.md).
#
# Perl's interpreter stays loaded in the worker, where njs 0.7 builds a virtual machine
# for each request that uses it, which cost more than the rest of a keyed write
# (bench/keys_cost.py). So the two things nginx needs on every keyed write are here:
#
# - bearer_hash: the SHA-256 (hex) of the key in "Authorization: Bearer stk_...", or ""
#   when the header is absent or malformed; nginx's keys map is looked up by it and
#   nginx/smalltable.js decides every other keyed request from that.
# - keyed_writer(PATH): the handler of $smalltable_keyed_write, made once at nginx's
#   configuration time from the keys map at PATH (ingestd/store/keys.py writes it and
#   reloads nginx), so it holds the very keys nginx's own maps were loaded with. For a
#   write nginx's maps route here it answers "SCOPE:KEY_ID" when the key is a live,
#   non-expiring key of the request's own project that may write, else "" (then njs
#   decides, and refuses with its reason).
#
# A key's hash is remembered for the next request with the same header (a client sends
# the same key again and again; SHA-256 is most of this module's cost). The memory holds
# at most MEMORY headers and is emptied when full, so wrong keys sent by the thousand
# cost memory no more than that. Nothing here is written anywhere.
package SmallTableKeys;

use strict;
use warnings;
use Digest::SHA qw(sha256_hex);

my %WRITES = map { $_ => 1 } qw(owner write read+write);
my $MEMORY = 1024;
our %hashed;

sub hash_of {
    my $header = shift;
    return '' unless defined $header;
    my $hash = $hashed{$header};
    return $hash if defined $hash;
    $hash = $header =~ /\ABearer +(stk_[0-9a-f]{32}) *\z/ ? sha256_hex($1) : '';
    %hashed = () if keys %hashed >= $MEMORY;
    $hashed{$header} = $hash;
    return $hash;
}

sub bearer_hash {
    my $r = shift;
    return hash_of($r->header_in('Authorization'));
}

sub read_keys {
    my $path = shift;
    my %keys;
    open(my $map, '<', $path) or return \%keys;
    while (my $line = <$map>) {
        next unless $line =~ /\A([0-9a-f]{64}) "(\S+) (\S+) ([0-9a-f]{12}) (\d+)";\s*\z/;
        $keys{$1} = [$2, $3, $4, $5];
    }
    close($map);
    return \%keys;
}

sub keyed_writer {
    my $keys = read_keys(shift);
    return sub {
        my $r = shift;
        my $key = $keys->{hash_of($r->header_in('Authorization'))};
        return '' unless $key && $key->[3] == 0 && $WRITES{$key->[1]};
        return '' unless $key->[0] eq $r->variable('smalltable_project');
        return "$key->[1]:$key->[2]";
    };
}

1;
