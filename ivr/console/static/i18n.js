// Chinese and English for the console: t(key) in the current language; elements with
// data-i18n="key" are filled by applyI18n(). The choice is kept in localStorage.
const TEXT = {
  app: ["12345 热线控制台", "12345 hotline console"],
  nav_wallboard: ["监控大屏", "Wallboard"],
  nav_agent: ["坐席面板", "Agent panel"],
  nav_dialplans: ["拨号方案", "Dialplans"],
  logout: ["退出", "Log out"],
  lang_switch: ["English", "中文"],
  login_title: ["登录", "Log in"],
  login_token: ["访问令牌", "Access token"],
  login_hint: ["令牌由管理员用 ivr tokens create 创建；只在本次登录时发送，不保存在页面中。",
    "An admin creates tokens with `ivr tokens create`; it is sent once to log in and not kept by the page."],
  login_button: ["登录", "Log in"],
  login_failed: ["登录失败", "Login failed"],
  live: ["实时", "live"],
  reconnecting: ["重新连接中…", "reconnecting…"],
  connecting: ["连接中…", "connecting…"],
  queue: ["队列", "Queue"],
  waiting: ["等待", "Waiting"],
  longest_wait: ["最长等待", "Longest wait"],
  available: ["空闲", "Available"],
  in_call: ["通话中", "In call"],
  ringing: ["振铃", "Ringing"],
  wrapup: ["话后处理", "Wrap-up"],
  paused: ["暂停", "Paused"],
  unavailable: ["离线", "Unavailable"],
  rate15_24h: ["15秒接通率 (24小时)", "15-s answer rate (24 h)"],
  rate_24h: ["接通率 (24小时)", "Answer rate (24 h)"],
  rate15_now: ["15秒接通率 (本进程)", "15-s answer rate (this process)"],
  offered_24h: ["来电 (24小时)", "Offered (24 h)"],
  waiting_total: ["排队来电", "Callers waiting"],
  agents_by_state: ["坐席状态", "Agents by state"],
  waiting_callers: ["排队中的来电", "Waiting callers"],
  live_calls: ["实时通话", "Live calls"],
  caller: ["来电号码", "Caller"],
  dialled: ["拨打号码", "Dialled"],
  language: ["语言", "Language"],
  entry: ["入口", "Entry"],
  agent: ["坐席", "Agent"],
  since: ["开始", "Since"],
  none: ["无", "none"],
  no_levels: ["无服务水平数据", "no service-level data"],
  my_state: ["我的状态", "My state"],
  interface: ["坐席接口", "Agent interface"],
  no_interface: ["此令牌未绑定坐席接口：请输入要操作的坐席接口。", "This token names no agent interface: enter the agent to act on."],
  not_logged_in: ["未签入任何队列", "not logged in to any queue"],
  pause_reason: ["暂停原因", "Pause reason"],
  queue_login: ["签入队列", "Log in to queue"],
  queue_logout: ["签出", "Log out of my queues"],
  agent_name: ["姓名", "Name"],
  pause: ["暂停", "Pause"],
  unpause: ["恢复", "Resume"],
  current_call: ["当前通话", "Current call"],
  no_call: ["当前没有通话", "no call now"],
  open_tickets: ["未办结工单", "Open tickets"],
  tags: ["标签", "Tags"],
  tickets_found: ["有未办结工单", "open ticket(s)"],
  tickets_none: ["无", "none"],
  tickets_unavailable: ["查询不可用", "lookup unavailable"],
  actions: ["通话操作", "Call actions"],
  threeway_dept: ["三方通话：承办单位", "Three-way: department"],
  threeway_110: ["三方通话：110", "Three-way: 110"],
  threeway_interpreter: ["三方通话：翻译", "Three-way: interpreter"],
  transfer: ["转接", "Transfer"],
  recording_mute: ["录音静音", "Mute recording"],
  recording_unmute: ["恢复录音", "Unmute recording"],
  target: ["目标（通讯录编号或号码）", "Target (directory id or number)"],
  not_available: ["本服务器未提供此功能", "not available on this server"],
  done: ["已完成", "done"],
  files: ["文件", "Files"],
  validate: ["校验", "Validate"],
  diff: ["差异", "Diff"],
  publish: ["发布", "Publish"],
  rollback: ["回滚到此版本", "Roll back to this"],
  reload: ["重新载入", "Reload"],
  valid: ["校验通过", "valid"],
  invalid: ["有错误", "has errors"],
  problems: ["问题", "Problems"],
  no_changes: ["没有修改", "no changes"],
  versions: ["版本", "Versions"],
  current_version: ["线上版本", "Running version"],
  audit: ["审计记录", "Audit trail"],
  published: ["已发布", "published"],
  when: ["时间", "When"],
  who: ["操作人", "Who"],
  status: ["状态", "Status"],
  action: ["操作", "Action"],
  result: ["结果", "Result"],
  read_only: ["只读：发布需要管理员角色", "read-only: publishing needs the admin role"],
  confirm_publish: ["确认发布到线上？", "Publish this to the live system?"],
  confirm_rollback: ["确认回滚到该版本？", "Roll back to this version?"],
  // a supervisor on the agent's call (agent.js, when the policy shows it)
  supervised: ["班长正在监听本通话", "A supervisor is on this call"],
  mode_listen: ["监听", "listening"],
  mode_whisper: ["耳语", "whispering to you"],
  mode_barge: ["强插", "barged in"],
  // supervise (班长监听, supervise.js)
  nav_supervise: ["班长监听", "Supervise"],
  my_phone: ["我的话机", "My phone"],
  phone_default: ["默认：策略中第一部", "default: the first in the policy"],
  supervisable_calls: ["可监听的通话", "Calls I may join"],
  join: ["加入", "Join"],
  my_session: ["当前监听", "My session"],
  mode: ["模式", "Mode"],
  leave: ["退出", "Leave"],
  last_session: ["上次监听", "Last session"],
  session_ringing: ["话机振铃中", "phone ringing"],
  session_active: ["进行中", "on the call"],
  session_ended: ["已结束", "ended"],
  session_failed: ["未接通", "not connected"],
  // quality review (质检, review.js)
  nav_review: ["质检评分", "Quality review"],
  review_sample: ["抽检通话", "Sampled calls"],
  day: ["日期", "Day"],
  draw_sample: ["抽检", "Draw the sample"],
  sampled: ["已抽检", "Sampled"],
  call: ["通话", "Call"],
  time: ["时间", "Time"],
  reasons: ["抽检原因", "Why sampled"],
  status: ["状态", "Status"],
  total: ["总分", "Total"],
  status_pending: ["待评分", "to score"],
  status_scored: ["已评分", "scored"],
  status_appealed: ["申诉中", "appealed"],
  reason_agent_share: ["坐席抽检", "agent share"],
  reason_queue_share: ["队列抽检", "queue share"],
  reason_low_score: ["差评", "low rating"],
  reason_complaint: ["投诉", "complaint"],
  reason_police: ["转110", "110 joined"],
  recording: ["录音", "Recording"],
  no_recording: ["无录音", "no recording"],
  speed: ["倍速", "Speed"],
  timeline: ["通话事件", "Call timeline"],
  score_form: ["评分表", "Scoring form"],
  comment: ["评语", "Comment"],
  submit_score: ["提交评分", "Submit score"],
  scored: ["评分已提交", "Score submitted"],
  appeal: ["申诉", "Appeal"],
  appeal_reason: ["申诉理由", "Why you appeal"],
  my_scores: ["我的质检成绩", "My quality scores"],
};

const KEY = "ivr.console.lang";

export function lang() {
  const saved = localStorage.getItem(KEY);
  if (saved === "zh" || saved === "en") return saved;
  return (navigator.language || "zh").toLowerCase().startsWith("en") ? "en" : "zh";
}

export function setLang(value) {
  localStorage.setItem(KEY, value);
  document.documentElement.lang = value === "zh" ? "zh-CN" : "en";
  applyI18n();
}

export function t(key) {
  const pair = TEXT[key];
  if (!pair) return key;
  return pair[lang() === "zh" ? 0 : 1];
}

// a bilingual API error message {zh, en} in the current language
export function message(msg) {
  if (!msg) return "";
  if (typeof msg === "string") return msg;
  return msg[lang()] || msg.en || "";
}

export function applyI18n(root = document) {
  document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
}
