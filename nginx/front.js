// njs for the front tier (nginx/front.conf.j2): the apex's lists merged from every host.
// Each host's /_projects.json is asked for at once; a host that does not answer is named
// in X-SmallTable-Unavailable (and on the page), and the others' projects are still listed.
// A project moved to another host (front-routes.map) is listed from that host only: the
// host it left keeps its old copy.
import fs from 'fs';

function pinned(r) {
    const pins = {};
    let text = '';
    try {
        text = fs.readFileSync(r.variables.front_routes_file, 'utf8');
    } catch (e) {
        return pins;
    }
    text.split('\n').forEach((line) => {
        const found = line.match(/^(\S+) smalltable_host_([0-9]+);$/);
        if (found) {
            pins[found[1]] = found[2];
        }
    });
    return pins;
}

function everyHost(r) {
    const count = Number(r.variables.front_hosts);
    const asks = [];
    for (let i = 0; i < count; i++) {
        asks.push(r.subrequest('/_front_list/' + i, {method: 'GET'}).then(
            (reply) => ({reply: reply, index: i}),
            () => ({reply: null, index: i})));
    }
    const pins = pinned(r);
    return Promise.all(asks).then((answers) => {
        const projects = [];
        const unavailable = [];
        answers.forEach((answer) => {
            let listed = null;
            if (answer.reply && answer.reply.status == 200) {
                try {
                    listed = JSON.parse(answer.reply.responseText);
                } catch (e) {
                    listed = null;
                }
            }
            if (Array.isArray(listed)) {
                listed.forEach((entry) => {
                    const home = pins[entry.project];
                    if (home === undefined || home == String(answer.index)) {
                        projects.push(entry);
                    }
                });
            } else {
                unavailable.push(String(answer.index));
            }
        });
        projects.sort((a, b) => (a.project < b.project ? -1 : a.project > b.project ? 1 : 0));
        return {projects: projects, unavailable: unavailable};
    });
}

function projects(r) {
    everyHost(r).then((all) => {
        if (all.unavailable.length) {
            r.headersOut['X-SmallTable-Unavailable'] = 'hosts ' + all.unavailable.join(',');
        }
        r.headersOut['Content-Type'] = 'application/json';
        r.headersOut['Access-Control-Allow-Origin'] = '*';
        r.return(200, JSON.stringify(all.projects) + '\n');
    });
}

function escape(text) {
    return String(text).replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
}

function apex(r) {
    everyHost(r).then((all) => {
        const items = all.projects.map((p) => '<li><a href="' + escape(p.url) + '">' + escape(p.project) +
            '</a>' + (p.records === undefined ? '' : ' ' + escape(p.records) + ' records') + '</li>');
        const missing = all.unavailable.length ?
            '<p class="warning">Some hosts did not answer: their projects are missing below.</p>' : '';
        r.headersOut['Content-Type'] = 'text/html; charset=utf-8';
        r.return(200, '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>SmallTable</title>' +
            '<link rel="stylesheet" href="/-/static-plugins/ingestd/smalltable.css"></head><body><main>' +
            '<h1>SmallTable</h1><p>POST anything to PROJECT.' + escape(r.variables.host) + '/</p>' + missing +
            '<h2>' + all.projects.length + ' projects</h2><ul id="projects">' + items.join('') +
            '</ul></main></body></html>\n');
    });
}

export default {projects, apex};
