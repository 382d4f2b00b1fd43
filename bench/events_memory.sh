#!/bin/bash
# RssAnon of an idle `motley up`, then after a job of 400 instances (~1,200 events: the ring full) and its delete.
set -e
M=${MOTLEY:-target/release/motley}
D=$(mktemp -d); P=$((20000 + RANDOM % 20000))
HOME=$D XDG_CONFIG_HOME=$D/config $M up --data-dir $D/data --listen 127.0.0.1:$P --name node1 > $D/out 2> $D/err &
UP=$!
for i in $(seq 100); do grep -q ready $D/out 2>/dev/null && break; sleep 0.2; done
C=$D/data/client.yaml
sleep 10
rss() { grep RssAnon /proc/$UP/status | awk '{print $2}'; }
echo "idle: $(rss) kB"
printf 'kind: Job\nname: many\ncompletions: 400\nparallelism: 8\ntask:\n  command: ["/bin/true"]\n  resources: { cpu: 10m, memory: 8Mi }\n' > $D/j.yaml
$M --config $C apply -f $D/j.yaml > /dev/null
for i in $(seq 300); do
  n=$($M --config $C get jobs many -o json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['status']['complete'])")
  [ "$n" = 400 ] && break; sleep 0.5
done
echo "events kept: $($M --config $C events -o json | python3 -c "import json,sys; print(len(json.load(sys.stdin)))") (at most 500 per answer)"
$M --config $C delete job/many > /dev/null
sleep 10
echo "after 400 instances and the delete: $(rss) kB"
kill $UP; wait $UP 2>/dev/null || true
rm -rf $D
