import type { Mode } from '../core/rules/types.js';
import type { DeviceView, LockView, PendingView, RefusalView } from './account.js';
import { hidden, html, postForm, type Html, type Texts } from './html.js';

/**
 * The account page's pages, as pure functions of what they show. Element ids are part of the
 * interface: browser tests and operators' monitoring drive the pages by them.
 */

export interface Page { title: string; body: Html }

/** Ids built from data stay within what an id and a CSS selector accept. */
const idPart = (s: string): string => s.replace(/[^A-Za-z0-9_-]/g, '_');

/** "2024-05-01 09:30 UTC": one unambiguous form for every reader, whatever their locale. */
export function formatWhen(iso: string): string {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return iso;
  const d = new Date(ms).toISOString();
  return /^\d{4}-\d\d-\d\d$/.test(iso) ? d.slice(0, 10) : `${d.slice(0, 10)} ${d.slice(11, 16)} UTC`;
}

const modeName = (t: Texts, m: Mode) => t(`mode_${m}_name`);
const modeText = (t: Texts, m: Mode) => t(`mode_${m}_text`);

export function homePage(t: Texts, base: string, csrf: string): Page {
  return {
    title: t('home_title'),
    body: html`<p>${t('home_intro')}</p>
${postForm(`${base}signin`, csrf, html`<label for="signin-address">${t('signin_address_label')}</label>
<input type="email" id="signin-address" name="address" autocomplete="email" inputmode="email" maxlength="320" required>
<button type="submit" id="signin-submit">${t('signin_submit')}</button>`)}`,
  };
}

export function signInSentPage(t: Texts, base: string, minutes: number): Page {
  return {
    title: t('signin_sent_title'),
    body: html`<p>${t('signin_sent_text', { minutes })}</p>
<p><a href="${base}">${t('signin_sent_again')}</a></p>`,
  };
}

export function signInConfirmPage(t: Texts, base: string, user: string, token: string, csrf: string): Page {
  return {
    title: t('signin_confirm_title'),
    body: html`<p>${t('signin_confirm_text', { user })}</p>
${postForm(`${base}s`, csrf, html`${hidden('token', token)}
<button type="submit" id="signin-confirm">${t('signin_confirm_button')}</button>`)}`,
  };
}

export function invalidLinkPage(t: Texts, base: string): Page {
  return {
    title: t('invalid_link_title'),
    body: html`<p>${t('invalid_link_text')}</p>
<p><a href="${base}">${t('invalid_link_action')}</a></p>`,
  };
}

/** A title and a sentence, with a way back: errors and confirmations. */
export function messagePage(title: string, text: string, back?: { href: string; text: string }): Page {
  return {
    title,
    body: html`<p>${text}</p>${back === undefined ? '' : html`
<p><a href="${back.href}">${back.text}</a></p>`}`,
  };
}

function pendingDetails(t: Texts, p: PendingView): Html {
  return html`<dl>
<dt>${t('field_client')}</dt><dd>${p.client === '' ? t('unknown_client') : p.client}</dd>
<dt>${t('field_type')}</dt><dd>${p.type}</dd>
<dt>${t('field_protocol')}</dt><dd>${p.protocol}</dd>
<dt>${t('field_address')}</dt><dd>${p.remote ?? t('unknown_address')}</dd>
<dt>${t('field_first_seen')}</dt><dd>${formatWhen(p.first)}</dd>
<dt>${t('field_last_seen')}</dt><dd>${formatWhen(p.last)}</dd>
<dt>${t('field_tries')}</dt><dd>${p.tries}</dd>
</dl>`;
}

export function approvePage(t: Texts, base: string, user: string, p: PendingView, token: string, csrf: string): Page {
  return {
    title: t('approve_title'),
    body: html`<p>${t('approve_intro', { user })}</p>
${pendingDetails(t, p)}
${postForm(`${base}approve`, csrf, html`${hidden('token', token)}
<button type="submit" name="answer" value="approve" id="approve">${t('approve_button')}</button>
<button type="submit" name="answer" value="reject" id="reject" class="danger">${t('reject_button')}</button>`)}`,
  };
}

export function rejectedPage(t: Texts, back?: { href: string; text: string }): Page {
  return {
    title: t('rejected_title'),
    body: html`<div class="warning"><p>${t('rejected_text')}</p>
<p>${t('rejected_where')}</p></div>${back === undefined ? '' : html`
<p><a href="${back.href}">${back.text}</a></p>`}`,
  };
}

export interface DevicesData {
  user: string;
  devices: readonly DeviceView[];
  pending: readonly PendingView[];
  refusals: readonly RefusalView[];
  lock: LockView;
  csrf: string;
}

function deviceItem(t: Texts, base: string, csrf: string, d: DeviceView): Html {
  const id = idPart(d.id);
  // A device without a name still needs something to be told apart by, on screen and in a screen reader's list of headings.
  const name = d.label === '' ? d.type : d.label;
  return html`<li>
<h3 class="name">${name}</h3>
<dl>
<dt>${t('device_type')}</dt><dd>${d.type}</dd>
<dt>${t('device_added')}</dt><dd>${formatWhen(d.added)}</dd>
<dt>${t('device_last_used')}</dt><dd>${d.lastUsed === null ? t('device_never_used') : d.lastUsed.slice(0, 10) /* kept to the day only */}</dd>
</dl>
${postForm(`${base}devices/rename`, csrf, html`${hidden('id', d.id)}
<label for="rename-${id}">${t('rename_label')}</label>
<input type="text" id="rename-${id}" name="label" value="${d.label}" maxlength="100" required>
<button type="submit" id="rename-${id}-submit" class="secondary">${t('rename_submit')}</button>`)}
${postForm(`${base}devices/remove`, csrf, html`${hidden('id', d.id)}
<button type="submit" id="remove-${id}" class="danger">${t('remove_submit', { label: name })}</button>`)}
</li>`;
}

function pendingItem(t: Texts, base: string, csrf: string, p: PendingView): Html {
  const id = idPart(p.id);
  const answer = p.state === 'pending'
    ? html`${postForm(`${base}pending/approve`, csrf, html`${hidden('hash', p.hash)}
<button type="submit" id="approve-${id}">${t('approve_button')}</button>`, 'inline')}
${postForm(`${base}pending/reject`, csrf, html`${hidden('hash', p.hash)}
<button type="submit" id="reject-${id}" class="danger">${t('reject_button')}</button>`, 'inline')}`
    // "Not me" can be a slip of the finger: the holder, signed in, may still let it in.
    : html`<p>${t('pending_rejected')}</p>
${postForm(`${base}pending/approve`, csrf, html`${hidden('hash', p.hash)}
<button type="submit" id="approve-${id}" class="secondary">${t('approve_after_all')}</button>`, 'inline')}`;
  return html`<li>
${pendingDetails(t, p)}
${answer}
</li>`;
}

/** A decision's reason code in the holder's words; codes the page does not know get a general text. */
function reasonText(t: Texts, reason: string): string {
  switch (reason) {
    case 'unknown_device': return t('reason_unknown_device');
    case 'no_device_proof': return t('reason_no_device_proof');
    case 'protocol_deny': return t('reason_protocol_deny');
    case 'limit': return t('reason_limit');
    default: return t('reason_other');
  }
}

function refusalItem(t: Texts, r: RefusalView): Html {
  return html`<li><dl>
<dt>${t('field_when')}</dt><dd>${formatWhen(r.at)}</dd>
<dt>${t('field_client')}</dt><dd>${r.client === '' ? t('unknown_client') : r.client}</dd>
<dt>${t('field_protocol')}</dt><dd>${r.protocol}</dd>
<dt>${t('field_address')}</dt><dd>${r.remote ?? t('unknown_address')}</dd>
<dt>${t('field_reason')}</dt><dd>${reasonText(t, r.reason)}</dd>
</dl></li>`;
}

function lockSection(t: Texts, base: string, csrf: string, lock: LockView): Html {
  const current = html`<p>${t('lock_current', { mode: modeName(t, lock.mode) })}</p>
<p class="hint">${modeText(t, lock.mode)}</p>`;
  if (lock.choices.length === 0) return html`${current}<p>${t('lock_fixed')}</p>`;
  const choices = lock.choices.map((m) => html`<div class="choice">
<input type="radio" id="mode-${m}" name="mode" value="${m}"${m === lock.mode ? html` checked` : ''} required>
<label for="mode-${m}">${modeName(t, m)}<span class="hint">${modeText(t, m)}</span></label>
</div>`);
  return html`${current}
${postForm(`${base}lock`, csrf, html`<fieldset>
<legend>${t('lock_legend')}</legend>
${choices}
</fieldset>
<button type="submit" id="lock-submit">${t('lock_submit')}</button>`)}`;
}

export function devicesPage(t: Texts, base: string, d: DevicesData): Page {
  const list = <T>(items: readonly T[], none: string, item: (x: T) => Html) =>
    items.length === 0 ? html`<p>${none}</p>` : html`<ul class="items">
${items.map(item)}
</ul>`;
  return {
    title: t('devices_title'),
    body: html`<p>${t('devices_signed_in_as', { user: d.user })}</p>
<h2>${t('pending_heading')}</h2>
${list(d.pending, t('pending_none'), (p) => pendingItem(t, base, d.csrf, p))}
<h2>${t('devices_heading')}</h2>
${list(d.devices, t('devices_none'), (x) => deviceItem(t, base, d.csrf, x))}
<h2>${t('lock_heading')}</h2>
${lockSection(t, base, d.csrf, d.lock)}
<h2>${t('refusals_heading')}</h2>
${list(d.refusals, t('refusals_none'), (r) => refusalItem(t, r))}
<div class="signout">${postForm(`${base}signout`, d.csrf, html`<button type="submit" id="signout" class="secondary">${t('signout_button')}</button>`)}</div>`,
  };
}
